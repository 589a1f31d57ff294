"""What a model costs, counted on the model as it is: parameters, non-zeros, bytes, FLOPs and latency.

- **Parameters** are counted from the weights each layer really holds, quantized ones included:
  ``model.parameters()`` does not see the packed int8 weights of quantized layers (they are not
  ``nn.Parameter``), so counting it would report a quantized model as having none.
- **Size** is the bytes of the saved model: ``torch.save(model.state_dict())`` for a Python
  module (packed int8 weights included), ``torch.jit.save(model)`` for a TorchScript one —
  exactly what :func:`save` writes.
- **FLOPs** come from ``torch.utils.flop_counter`` on one forward pass of the sample input (a
  multiply-add counts 2). They are dense counts: a pruned model's zeros are still multiplied by
  dense kernels. The counter does not see int8 kernels, so a quantized model is given the count
  of the float model it was quantized from (the same operations, in int8).
- **Latency** is timed per forward pass after a warm-up, under ``torch.inference_mode``.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from carbond.errors import OptimizeError
from carbond.optimize.techniques import as_args, is_scripted, quiet


@dataclass(frozen=True)
class Efficiency:
    params: int
    nonzero_params: int
    size_bytes: int
    flops: int | None  # per forward pass of the sample input
    flops_counted_on: str  # "this model" | "the float model it was quantized from" | "not counted"


@dataclass(frozen=True)
class Latency:
    batch_size: int
    batches: int
    median_ms: float
    p95_ms: float
    items_per_s: float
    elapsed_s: float


# --- weights ------------------------------------------------------------------------------------------

_UNPACK = {"LinearPackedParamsBase": "linear_unpack", "Conv2dPackedParamsBase": "conv2d_unpack",
           "Conv3dPackedParamsBase": "conv3d_unpack", "Conv1dPackedParamsBase": "conv1d_unpack"}


def scripted_packed_params(model: nn.Module) -> Iterator[tuple[str, tuple[torch.Tensor | None, ...]]]:
    """(packed type, unpacked weight and bias) of the int8 weights a TorchScript pass stored as graph attributes."""
    seen: set[str] = set()
    for mod in model.modules():
        graph = getattr(mod, "graph", None)
        if graph is None:
            continue
        for node in graph.findAllNodes("prim::GetAttr", True):
            kind = str(node.output().type()).rsplit(".", 1)[-1]
            name = node.s("name")
            key = f"{id(mod)}:{name}"
            if kind in _UNPACK and key not in seen and mod._c.hasattr(name):
                seen.add(key)
                yield kind, tuple(getattr(torch.ops.quantized, _UNPACK[kind])(mod._c.getattr(name)))


def _quantized_weights(mod: nn.Module) -> Iterator[torch.Tensor]:
    """The weights and biases of a torch.ao quantized layer, which keeps them packed rather than as parameters."""
    weight_bias = getattr(mod, "_weight_bias", None)
    if not callable(weight_bias):
        return
    found = weight_bias()  # quantized Linear/Conv: (weight, bias); dynamic LSTM/GRU: {"weight": {...}, "bias": {...}}
    groups = found.values() if isinstance(found, dict) else [dict(enumerate(found))]
    for group in groups:
        yield from (t for t in group.values() if isinstance(t, torch.Tensor))


def _is_quantized(mod: nn.Module) -> bool:
    return type(mod).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))


def weight_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every parameter tensor the model holds, float or int8, each once (buffers such as running means excluded)."""
    seen: set[int] = set()
    for mod in model.modules():
        for p in mod.parameters(recurse=False):  # persistent objects: a shared (tied) one counts once
            if id(p) not in seen:
                seen.add(id(p))
                yield p
        # a quantized Linear unpacks its child's packed weights: count the child (LinearPackedParams) only
        if _is_quantized(mod) and not any(_is_quantized(c) and callable(getattr(c, "_weight_bias", None))
                                          for c in mod.children()):
            yield from _quantized_weights(mod)
    if is_scripted(model):
        for _, tensors in scripted_packed_params(model):
            yield from (t for t in tensors if isinstance(t, torch.Tensor))


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters); an int8 weight is zero when it dequantizes to 0."""
    total = nonzero = 0
    for t in weight_tensors(model):
        values = t.dequantize() if t.is_quantized else t
        total += values.numel()
        nonzero += int(torch.count_nonzero(values.detach()))
    return total, nonzero


def serialized(model: nn.Module) -> bytes:
    """The saved model: its state dict (``torch.save``), or the TorchScript archive (``torch.jit.save``)."""
    buf = io.BytesIO()
    if is_scripted(model):
        with quiet():
            torch.jit.save(model, buf)
    else:
        torch.save(model.state_dict(), buf)
    return buf.getvalue()


def save(model: nn.Module, path: str | Path) -> int:
    """Write :func:`serialized` to ``path``; returns the bytes written (= the size reported)."""
    data = serialized(model)
    Path(path).write_bytes(data)
    return len(data)


# --- FLOPs and time -----------------------------------------------------------------------------------


def count_flops(model: nn.Module, sample: Any) -> int:
    """FLOPs of one forward pass (torch.utils.flop_counter; a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(*as_args(sample))
    return int(counter.get_total_flops())


def batch_size(sample: Any) -> int:
    first = as_args(sample)[0]
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else 1


def _sync(args: tuple[Any, ...]) -> None:
    if any(isinstance(a, torch.Tensor) and a.is_cuda for a in args):
        torch.cuda.synchronize()


def time_forward(model: nn.Module, sample: Any, *, batches: int, warmup: int = 5, min_time_s: float = 0.0) -> Latency:
    """Time forward passes after ``warmup`` untimed ones: at least ``batches`` passes and at least ``min_time_s``."""
    if batches < 1 or warmup < 0 or min_time_s < 0:
        raise OptimizeError(f"batches must be ≥ 1, warmup and min_time_s ≥ 0 (got {batches}, {warmup}, {min_time_s})")
    args = as_args(sample)
    times_ns: list[int] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(*args)
        _sync(args)
        start = time.perf_counter_ns()
        deadline = start + int(min_time_s * 1e9)
        while len(times_ns) < batches or time.perf_counter_ns() < deadline:
            t0 = time.perf_counter_ns()
            model(*args)
            _sync(args)
            times_ns.append(time.perf_counter_ns() - t0)
        elapsed_s = (time.perf_counter_ns() - start) / 1e9
    n = batch_size(sample)
    return Latency(n, len(times_ns), percentile(times_ns, 50) / 1e6, percentile(times_ns, 95) / 1e6,
                   n * len(times_ns) / elapsed_s if elapsed_s > 0 else math.inf, elapsed_s)


def percentile(values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile (the smallest value with at least q% of the values at or below it)."""
    if not values:
        raise ValueError("percentile of nothing")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def efficiency(model: nn.Module, sample: Any, *, flops_from: nn.Module | None = None) -> Efficiency:
    """Parameters, non-zeros, saved bytes and FLOPs of ``model`` (FLOPs of ``flops_from`` when it was quantized)."""
    params, nonzero = count_params(model)
    source = model if flops_from is None else flops_from
    try:
        flops: int | None = count_flops(source, sample)
    except Exception:  # an operator the counter cannot run under its dispatch mode
        flops = None
    counted_on = "not counted" if flops is None else ("this model" if flops_from is None or flops_from is model
                                                      else "the float model it was quantized from")
    return Efficiency(params, nonzero, len(serialized(model)), flops, counted_on)
