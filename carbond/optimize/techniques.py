"""Pruning and int8 quantization of a model, each reporting what it really did, counted on the result.

Every technique works on a copy (the caller's model is never changed) and returns it with an
:class:`Applied` record. Pruning is made permanent: the zeros are in the weights themselves,
with no mask or reparametrization left behind, so the pruned model saves, scripts and runs like
any other. Pruning works on ``nn.Module`` and TorchScript models alike (the masks are computed by
``torch.nn.utils.prune``'s own methods and multiplied into the weights); dynamic int8 works on
both; static int8 needs the Python model (it is traced with ``torch.fx``).

A variant is a name: ``baseline``, ``pruned-30`` (global L1 unstructured, 30% of the weights),
``pruned-channels-25`` (25% of the output channels of each Linear/Conv layer but the last),
``quantized-int8`` (dynamic), ``quantized-static-int8`` (post-training, calibrated), or a pruning
and a quantization joined with ``+`` (``pruned-50+quantized-int8``).
"""

from __future__ import annotations

import copy
import io
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from carbond.errors import OptimizeError

PRUNABLE = ("Linear", "Bilinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
            "LSTM", "GRU", "RNN")
CHANNEL_PRUNABLE = ("Linear", "Conv1d", "Conv2d", "Conv3d")
DYNAMIC_INT8 = ("Linear", "LSTM", "GRU", "LSTMCell", "GRUCell", "RNNCell")
DYNAMIC_INT8_SCRIPTED = ("Linear",)  # what torch.ao's TorchScript pass quantizes
STATIC_INT8 = ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")

VARIANT_GRAMMAR = ("baseline | pruned-P | pruned-channels-P | quantized-int8 | quantized-static-int8 | "
                   "pruned[-channels]-P+quantized[-static]-int8   (P: percent, 0 < P < 100)")


@dataclass(frozen=True)
class Applied:
    """What one technique did. ``sparsity``: zeros / elements of the tensors it pruned, counted after pruning."""

    technique: str  # prune-l1 | prune-channels | quantize-dynamic | quantize-static
    summary: str
    layers: Mapping[str, int] = field(default_factory=dict)  # layer type -> how many it changed
    sparsity: float | None = None
    pruned_elements: int | None = None  # elements in the pruned tensors
    zero_elements: int | None = None  # of which zero after pruning


@dataclass(frozen=True)
class Step:
    technique: str
    amount: float = 0.0  # pruning: the fraction to remove


@dataclass(frozen=True)
class Variant:
    name: str
    steps: tuple[Step, ...]

    @property
    def quantized(self) -> bool:
        return any(s.technique.startswith("quantize") for s in self.steps)


# --- layers -------------------------------------------------------------------------------------------


def is_scripted(model: Any) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def layer_kind(mod: nn.Module, kinds: Iterable[str]) -> str | None:
    """The torch.nn layer type in ``kinds`` that ``mod`` is (or subclasses), else None."""
    wanted = set(kinds)
    if is_scripted(mod):
        name = getattr(mod, "original_name", "")
        return name if name in wanted else None
    for cls in type(mod).__mro__:
        if cls.__name__ in wanted and cls.__module__.startswith("torch.nn.modules"):
            return cls.__name__
    return None


def inventory(model: nn.Module) -> str:
    """The model's leaf layer types with counts, for error messages: ``Conv2d ×2, ReLU ×3``."""
    counts: Counter[str] = Counter()
    for mod in model.modules():
        if not any(True for _ in mod.children()):
            counts[getattr(mod, "original_name", None) if is_scripted(mod) else type(mod).__name__] += 1
    return ", ".join(f"{k} ×{n}" if n > 1 else k for k, n in sorted(counts.items())) or "none"


def _none_error(what: str, kinds: Iterable[str], model: nn.Module) -> OptimizeError:
    return OptimizeError(f"{what} takes {', '.join(kinds)} layers; this model has none (its layers: {inventory(model)})")


def clone(model: nn.Module) -> nn.Module:
    """A deep copy; TorchScript models through a save and load."""
    try:
        if is_scripted(model):
            with quiet():
                buf = io.BytesIO()
                torch.jit.save(model, buf)
                buf.seek(0)
                return torch.jit.load(buf, map_location="cpu")
        return copy.deepcopy(model)
    except Exception as exc:  # a module holding something that cannot be copied (a lock, a file)
        raise OptimizeError(f"the model cannot be copied, and carbond does not change the caller's model: {exc}") from exc


# --- pruning ------------------------------------------------------------------------------------------


def _check_amount(amount: float) -> None:
    if not isinstance(amount, int | float) or isinstance(amount, bool) or not 0.0 < float(amount) < 1.0:
        raise OptimizeError(f"pruning amount must be a fraction between 0 and 1 (exclusive), got {amount!r}")


def _weights(model: nn.Module, kinds: Iterable[str]) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """(layer type, module, parameter name, tensor) of every weight of the layers of ``kinds``, each tensor once."""
    seen: set[int] = set()
    for mod in model.modules():
        kind = layer_kind(mod, kinds)
        if kind is None:
            continue
        for pname, p in mod.named_parameters(recurse=False):
            if pname.startswith("weight") and id(p) not in seen:
                seen.add(id(p))
                yield kind, mod, pname, p


def prune_global(model: nn.Module, amount: float) -> tuple[nn.Module, Applied]:
    """Global L1 unstructured pruning: the ``amount`` fraction of all prunable weights with the smallest |w| set to 0."""
    _check_amount(amount)
    out = clone(model)
    targets = list(_weights(out, PRUNABLE))
    if not targets:
        raise _none_error("global L1 pruning", PRUNABLE, model)
    tensors = [t[3] for t in targets]
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in tensors])
        mask = prune.L1Unstructured(amount=float(amount)).compute_mask(flat, default_mask=torch.ones_like(flat))
        offset = 0
        for p in tensors:
            p.mul_(mask[offset:offset + p.numel()].view_as(p).to(p.dtype))
            offset += p.numel()
    total = sum(p.numel() for p in tensors)
    zeros = sum(int((p == 0).sum()) for p in tensors)
    layers = Counter({id(mod): kind for kind, mod, _, _ in targets}.values())
    return out, Applied("prune-l1", f"global L1 unstructured pruning at {amount:.0%} over {len(tensors)} weight tensors "
                        f"({_counts(layers)}): {zeros / total:.2%} of their {total:,} weights are zero",
                        dict(layers), zeros / total, total, zeros)


def prune_channels(model: nn.Module, amount: float) -> tuple[nn.Module, Applied]:
    """Structured pruning: in every Linear/Conv layer but the last (the model's outputs), the ``amount`` fraction of
    output channels with the smallest L2 norm set to 0, their bias too, so each removed channel outputs 0."""
    _check_amount(amount)
    out = clone(model)
    targets = [t for t in _weights(out, CHANNEL_PRUNABLE) if t[2] == "weight"]
    if len(targets) < 2:
        raise OptimizeError(f"channel pruning removes output channels of {', '.join(CHANNEL_PRUNABLE)} layers other than "
                            f"the last (the model's outputs); this model has {len(targets)} such layer(s) "
                            f"(its layers: {inventory(model)})")
    removed = channels = 0
    layers: Counter[str] = Counter()
    with torch.no_grad():
        for kind, mod, _, p in targets[:-1]:
            mask = prune.LnStructured(amount=float(amount), n=2, dim=0).compute_mask(p, default_mask=torch.ones_like(p))
            dead = mask.reshape(mask.shape[0], -1).sum(dim=1) == 0
            p.mul_(mask.to(p.dtype))
            bias = getattr(mod, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias[dead] = 0
            removed += int(dead.sum())
            channels += p.shape[0]
            layers[kind] += 1
    pruned = [t[3] for t in targets[:-1]]
    total = sum(p.numel() for p in pruned)
    zeros = sum(int((p == 0).sum()) for p in pruned)
    return out, Applied("prune-channels", f"structured L2 channel pruning at {amount:.0%} in {len(pruned)} layers "
                        f"({_counts(layers)}; the last layer kept whole): {removed:,} of {channels:,} output channels "
                        f"removed, {zeros / total:.2%} of their weights zero", dict(layers), zeros / total, total, zeros)


def _counts(c: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(c.items()))


# --- quantization -------------------------------------------------------------------------------------


@contextmanager
def quiet() -> Iterator[None]:
    """torch.ao.quantization and TorchScript warn on every call that they are deprecated (see docs/optimize.md)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max")
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The \.grad attribute of a Tensor that is not a leaf")
        yield


def _engine() -> str:
    engine = torch.backends.quantized.engine
    if engine and engine != "none":
        return engine
    for candidate in ("x86", "fbgemm", "qnnpack"):
        if candidate in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = candidate
            return candidate
    raise OptimizeError(f"this torch build has no int8 CPU engine (supported: {torch.backends.quantized.supported_engines})")


def _on_cpu(model: nn.Module) -> None:
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices - {"cpu"}:
        raise OptimizeError(f"int8 quantization (torch.ao) runs on the CPU; the model is on {', '.join(sorted(devices))}: "
                            "pass model.cpu() and a CPU sample input")


def quantized_layers(model: nn.Module) -> Counter[str]:
    """int8 layers in a model by type; a TorchScript model's packed weights as ``LinearPackedParams`` etc."""
    from carbond.optimize.metrics import scripted_packed_params

    if is_scripted(model):
        return Counter(kind.removesuffix("PackedParamsBase") for kind, _ in scripted_packed_params(model))
    return Counter(type(m).__name__ for m in model.modules() if not type(m).__name__.endswith("PackedParams")
                   and type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")))


def quantize_dynamic(model: nn.Module) -> tuple[nn.Module, Applied]:
    """Dynamic int8: weights stored as int8, activations quantized on the fly (Linear and recurrent layers)."""
    _on_cpu(model)
    scripted = is_scripted(model)
    kinds = DYNAMIC_INT8_SCRIPTED if scripted else DYNAMIC_INT8
    present = {k for m in model.modules() if (k := layer_kind(m, kinds))}
    if not present:
        raise _none_error("dynamic int8 quantization" + (" of a TorchScript model" if scripted else ""), kinds, model)
    _engine()
    with quiet():
        if scripted:
            from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic_jit

            out = quantize_dynamic_jit(clone(model).eval(), {"": default_dynamic_qconfig})
        else:
            from torch.ao.quantization import quantize_dynamic as ao_quantize_dynamic

            out = ao_quantize_dynamic(clone(model).eval(), {getattr(nn, k) for k in present}, dtype=torch.qint8)
    layers = quantized_layers(out)
    if not layers:
        raise _none_error("dynamic int8 quantization", kinds, model)
    return out, Applied("quantize-dynamic", f"dynamic int8 quantization: {_counts(layers)} int8; "
                        f"{_left_float(out)}", dict(layers))


def _left_float(model: nn.Module) -> str:
    rest = Counter(k for m in model.modules() if (k := layer_kind(m, PRUNABLE)))
    return f"left in float: {_counts(rest)}" if rest else "nothing left in float"


def as_args(sample: Any) -> tuple[Any, ...]:
    """A model input as positional arguments: a tensor, or a tuple/list of them."""
    if isinstance(sample, torch.Tensor):
        return (sample,)
    if isinstance(sample, tuple | list) and sample:
        return tuple(sample)
    raise OptimizeError(f"a model input must be a tensor or a non-empty tuple of arguments, got {type(sample).__name__}")


def quantize_static(model: nn.Module, example: Any, calibration: Iterable[Any] | None) -> tuple[nn.Module, Applied]:
    """Post-training static int8 (torch.fx graph mode): weights and activations int8, scales from ``calibration``,
    an iterable of model inputs (tensors, or tuples of arguments), or one batch as a tensor."""
    if is_scripted(model):
        raise OptimizeError("static int8 quantization traces the Python model with torch.fx; a TorchScript model takes "
                            "quantized-int8 (dynamic) only. Use carbond.optimize.compare() with the nn.Module.")
    _on_cpu(model)
    present = {k for m in model.modules() if (k := layer_kind(m, STATIC_INT8))}
    if not present:
        raise _none_error("static int8 quantization", STATIC_INT8, model)
    if calibration is None:
        raise OptimizeError("quantized-static-int8 needs calibration inputs: compare(..., calibration=[batch, ...]) "
                            "with a few representative batches")
    engine = _engine()
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with quiet():
        try:
            prepared = prepare_fx(clone(model).eval(), get_default_qconfig_mapping(engine), as_args(example))
        except Exception as exc:
            raise OptimizeError(f"static int8 quantization traces the model with torch.fx, and this model cannot be traced "
                                f"({type(exc).__name__}: {exc}); quantized-int8 (dynamic) needs no tracing") from exc
        batches = 0
        with torch.no_grad():
            for batch in [calibration] if isinstance(calibration, torch.Tensor) else calibration:  # a tensor: one batch
                try:
                    prepared(*as_args(batch))
                except OptimizeError:
                    raise
                except Exception as exc:
                    raise OptimizeError(f"calibration batch {batches} does not fit the model: {exc}") from exc
                batches += 1
        if not batches:
            raise OptimizeError("the calibration inputs gave no batch")
        out = convert_fx(prepared)
    layers = quantized_layers(out)
    if not layers:
        raise _none_error("static int8 quantization", STATIC_INT8, model)
    plural = "" if batches == 1 else "es"
    return out, Applied("quantize-static", f"static int8 quantization ({engine}, {batches} calibration batch{plural}): "
                        f"{_counts(layers)} int8; {_left_float(out)}", dict(layers))


# --- variants -----------------------------------------------------------------------------------------

_PRUNE = re.compile(r"pruned(-channels)?-(\d+(?:\.\d+)?)")


def parse_variant(name: str) -> Variant:
    """``pruned-50+quantized-int8`` -> its steps; an OptimizeError with the grammar for anything else."""
    if not isinstance(name, str) or not name.strip():
        raise OptimizeError(f"a variant is a name: {VARIANT_GRAMMAR}; got {name!r}")
    text = name.strip().lower()
    if text == "baseline":
        return Variant(name, ())
    steps: list[Step] = []
    for part in text.split("+"):
        if m := _PRUNE.fullmatch(part):
            percent = float(m.group(2))
            if not 0 < percent < 100:
                raise OptimizeError(f"variant {name!r}: the pruning percentage must be between 0 and 100, got {m.group(2)}")
            if steps:
                raise OptimizeError(f"variant {name!r}: one pruning, before any quantization ({VARIANT_GRAMMAR})")
            steps.append(Step("prune-channels" if m.group(1) else "prune-l1", percent / 100.0))
        elif part in ("quantized-int8", "quantized-dynamic-int8", "quantized-static-int8"):
            if any(s.technique.startswith("quantize") for s in steps):
                raise OptimizeError(f"variant {name!r}: one quantization at most")
            steps.append(Step("quantize-static" if "static" in part else "quantize-dynamic"))
        else:
            raise OptimizeError(f"unknown variant {name!r} (part {part!r}); variants: {VARIANT_GRAMMAR}")
    return Variant(name, tuple(steps))


def apply_variant(model: nn.Module, variant: Variant | str, *, example: Any = None,
                  calibration: Iterable[Any] | None = None) -> tuple[nn.Module, list[Applied], nn.Module]:
    """The variant of ``model``, what each step did, and the float model its quantization started from (for FLOPs)."""
    v = parse_variant(variant) if isinstance(variant, str) else variant
    out, applied, before_quantization = model, [], model
    for step in v.steps:
        if step.technique == "prune-l1":
            out, a = prune_global(out, step.amount)
        elif step.technique == "prune-channels":
            out, a = prune_channels(out, step.amount)
        elif step.technique == "quantize-dynamic":
            before_quantization = out
            out, a = quantize_dynamic(out)
        else:
            before_quantization = out
            out, a = quantize_static(out, example, calibration)
        applied.append(a)
    if not v.quantized:
        before_quantization = out
    return out, applied, before_quantization
