"""Variants of a model side by side: size, FLOPs, latency, accuracy and measured energy per item.

Every variant is built first (a technique the model does not allow, or a sample input the
model does not take, fails before anything is benchmarked or written). Then each variant is
evaluated (``eval_fn``, outside the measured run), warmed up, and timed inside its own
``carbond.track`` run (phase ``inference``, tag ``variant``), which logs the items it
inferred as work units and the evaluation metrics; the daemon (or, without one, the process
itself) measures the run's energy, so ``carbond report compare --run ... --per items`` reads
the same comparison back from the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from carbond.errors import OptimizeError
from carbond.impacts import energy_basis
from carbond.optimize.metrics import Efficiency, Latency, batch_size, efficiency, save, time_forward
from carbond.optimize.techniques import Applied, Variant, apply_variant, as_args, parse_variant

DEFAULT_VARIANTS = ("baseline", "pruned-30", "quantized-int8", "pruned-30+quantized-int8")
EvalFn = Callable[[nn.Module], float | Mapping[str, float]]


def _describe(args: tuple[Any, ...]) -> str:
    return ", ".join(f"shape {tuple(a.shape)} {str(a.dtype).removeprefix('torch.')}" if isinstance(a, torch.Tensor)
                     else type(a).__name__ for a in args)


def _first_layer(model: nn.Module) -> str:
    for mod in model.modules():
        for attr in ("in_features", "in_channels", "input_size", "num_embeddings"):
            value = getattr(mod, attr, None)
            if isinstance(value, int):
                name = getattr(mod, "original_name", None) or type(mod).__name__
                return f"; its first layer, {name}, takes {attr}={value}"
    return ""


def check_input(model: nn.Module, sample: Any) -> tuple[Any, ...]:
    """Run the model once on ``sample``; an OptimizeError naming the input's and the first layer's shapes if it fails."""
    args = as_args(sample)
    try:
        with torch.inference_mode():
            model(*args)
    except Exception as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        # TorchScript puts the interpreter's traceback first and the error last
        reason = (lines[-1] if lines[0].startswith("The following operation failed") else lines[0]) if lines else type(exc).__name__
        raise OptimizeError(f"the sample input ({_describe(args)}) does not fit the model: {reason}"
                            f"{_first_layer(model)}") from exc
    return args


def _metrics(value: Any, variant: str) -> dict[str, float]:
    if isinstance(value, Mapping):
        out = {str(k): v for k, v in value.items()}
    else:
        out = {"accuracy": value}
    for key, v in out.items():
        if not isinstance(v, int | float) or isinstance(v, bool) or v != v:
            raise OptimizeError(f"eval_fn on {variant!r} returned {key}={v!r}: it must return a number or a "
                                "mapping of names to numbers")
    return {k: float(v) for k, v in out.items()}


def _pct(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return (value - base) / abs(base) * 100.0


def _benchmark(model: nn.Module, sample: Any, name: str, metrics: Mapping[str, float], *, batches: int, warmup: int,
               min_time_s: float, job: str, project: str | None, tags: Mapping[str, Any], socket: str | None
               ) -> tuple[Latency, Any]:
    from carbond.client import track

    time_forward(model, sample, batches=1, warmup=warmup)  # warm up outside the run: the run measures steady state
    with track(job, project=project, phase="inference", tags={**tags, "variant": name}, socket=socket) as run:
        latency = time_forward(model, sample, batches=batches, warmup=0, min_time_s=min_time_s)
        run.log(items=latency.batch_size * latency.batches, batches=latency.batches, **metrics)
    return latency, run.result


def run_comparison(model: nn.Module, sample_input: Any, variants: Sequence[str] = DEFAULT_VARIANTS, *,
                   eval_fn: EvalFn | None = None, calibration: Iterable[Any] | None = None, n_batches: int = 50,
                   warmup: int = 5, min_time_s: float = 2.0, job: str = "optimize", project: str | None = None,
                   tags: Mapping[str, Any] | None = None, socket: str | None = None,
                   save_dir: str | Path | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The comparison as rows (one dict per variant, in the order given) and notes; see :func:`compare`."""
    parsed = [parse_variant(v) for v in variants]
    if not parsed:
        raise OptimizeError("no variant to compare")
    names = [v.name for v in parsed]
    if len(set(names)) != len(names):
        raise OptimizeError(f"variants must differ: {', '.join(names)}")
    if n_batches < 1 or warmup < 0 or not min_time_s >= 0:
        raise OptimizeError(f"n_batches must be ≥ 1, warmup and min_time_s ≥ 0 (got {n_batches}, {warmup}, {min_time_s})")
    out_dir = _save_dir(save_dir)
    if isinstance(calibration, Iterable) and not isinstance(calibration, Sequence | torch.Tensor):
        calibration = list(calibration)  # a generator is used once per variant that needs it
    was_training = model.training
    model.eval()
    try:
        check_input(model, sample_input)
        built: list[tuple[Variant, nn.Module, list[Applied], nn.Module]] = []
        for v in parsed:
            variant_model, applied, float_model = apply_variant(model, v, example=sample_input, calibration=calibration)
            check_input(variant_model, sample_input)
            built.append((v, variant_model, applied, float_model))
        rows = []
        for v, variant_model, applied, float_model in built:
            eff = efficiency(variant_model, sample_input, flops_from=float_model if v.quantized else None)
            metrics = _metrics(eval_fn(variant_model), v.name) if eval_fn is not None else {}
            latency, result = _benchmark(variant_model, sample_input, v.name, metrics, batches=n_batches, warmup=warmup,
                                         min_time_s=min_time_s, job=job, project=project, tags=tags or {}, socket=socket)
            rows.append(_row(v, applied, eff, latency, result, metrics))
            if out_dir is not None:
                rows[-1]["saved"] = str(out_dir / f"{_file_name(job)}-{_file_name(v.name)}.pt")
                save(variant_model, rows[-1]["saved"])
    finally:
        model.train(was_training)
    base = next((i for i, v in enumerate(parsed) if not v.steps), 0)
    _deltas(rows, base)
    notes = _notes(rows, base, batch_size(sample_input))
    for row in rows:
        del row["_energy_kwh"], row["_co2_g"]
    return rows, notes


def _save_dir(path: str | Path | None) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptimizeError(f"cannot create the save directory {out}: {exc.strerror}") from exc
    return out


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _row(v: Variant, applied: list[Applied], eff: Efficiency, latency: Latency, result: Any,
         metrics: Mapping[str, float]) -> dict[str, Any]:
    items = latency.batch_size * latency.batches
    measured = result.measured_by != "none" and result.energy_j > 0
    return {
        "variant": v.name, "techniques": "; ".join(a.summary for a in applied) or "unchanged",
        "size_bytes": eff.size_bytes, "params": eff.params, "nonzero_params": eff.nonzero_params,
        "sparsity": 1.0 - eff.nonzero_params / eff.params if eff.params else None,
        "flops": eff.flops, "flops_counted_on": eff.flops_counted_on,
        "latency_ms_p50": latency.median_ms, "latency_ms_p95": latency.p95_ms,
        "throughput_items_s": latency.items_per_s, "items": items, "batches": latency.batches,
        "energy_j": result.energy_j if measured else None,
        "energy_j_per_item": result.energy_j / items if measured else None,
        "co2_g_per_1k_items": result.co2_g / items * 1000.0 if measured else None,
        "energy_source": energy_basis(result.sources) if measured else "none", "measured_by": result.measured_by,
        "run": result.run_id, "accuracy": metrics.get("accuracy"),
        **{f"metric_{k}": val for k, val in metrics.items() if k != "accuracy"},
        "_co2_g": result.co2_g, "_energy_kwh": result.energy_kwh,
    }


def _deltas(rows: list[dict[str, Any]], base: int) -> None:
    b = rows[base]
    for row in rows:
        row["size_change_pct"] = _pct(row["size_bytes"], b["size_bytes"])
        row["flops_change_pct"] = _pct(row["flops"], b["flops"])
        row["latency_change_pct"] = _pct(row["latency_ms_p50"], b["latency_ms_p50"])
        row["energy_change_pct"] = _pct(row["energy_j_per_item"], b["energy_j_per_item"])
        row["co2_change_pct"] = _pct(row["co2_g_per_1k_items"], b["co2_g_per_1k_items"])
        row["accuracy_delta"] = (row["accuracy"] - b["accuracy"]
                                 if row["accuracy"] is not None and b["accuracy"] is not None else None)


def _notes(rows: list[dict[str, Any]], base: int, batch: int) -> list[str]:
    notes = [f"baseline: {rows[base]['variant']}; *_change_pct in % of it, accuracy_delta in absolute points",
             f"latency: per forward pass of a batch of {batch}, after warm-up; energy: measured per variant run "
             "(phase inference, tag variant) and divided by the items inferred"]
    sources = sorted({f"{r['energy_source']} ({r['measured_by']})" for r in rows})
    notes.append("energy known by: " + ", ".join(sources) + " — counter: hardware energy counters, power: measured "
                 "power, model: a power model (see docs/methodology.md)")
    kwh = sum(r["_energy_kwh"] for r in rows)
    co2 = sum(r["_co2_g"] for r in rows)
    if kwh > 0:
        notes.append(f"CO2 at {co2 / kwh:,.0f} g/kWh as applied by the measuring carbond (grid intensity × PUE; "
                     "`carbond status --json` or `carbond intensity` give each factor with its source and year)")
    if any(r["flops_counted_on"] != "this model" for r in rows):
        notes.append("flops of int8 variants are those of the float model they were quantized from "
                     "(torch.utils.flop_counter does not see int8 kernels; the operations are the same)")
    if any(r["measured_by"] == "none" for r in rows):
        notes.append("no energy for some variants: neither a daemon nor this process could measure them")
    runs = [r["run"] for r in rows if r["run"]]
    if runs:
        notes.append("from the store: carbond report compare --per items --run " + " ".join(runs))
    return notes


def compare(model: nn.Module, sample_input: Any, variants: Sequence[str] = DEFAULT_VARIANTS, *,
            eval_fn: EvalFn | None = None, calibration: Iterable[Any] | None = None, n_batches: int = 50,
            warmup: int = 5, min_time_s: float = 2.0, job: str = "optimize", project: str | None = None,
            tags: Mapping[str, Any] | None = None, socket: str | None = None, save_dir: str | Path | None = None) -> Any:
    """Build each variant of ``model``, measure it, and return a pandas DataFrame with one row per variant.

    ``sample_input``: one batch (a tensor, or a tuple of arguments) — the first dimension is the
    batch size. ``variants``: names such as ``baseline``, ``pruned-30``, ``pruned-channels-25``,
    ``quantized-int8``, ``quantized-static-int8`` (needs ``calibration``, an iterable of inputs),
    ``pruned-50+quantized-int8``. ``eval_fn(model)`` returns the accuracy (or a mapping of
    metrics) of a variant; it runs outside the measured run. Each variant is timed for at least
    ``n_batches`` forward passes and ``min_time_s`` seconds inside a ``carbond.track(job, project,
    phase="inference", tags={..., "variant": name})`` run. ``df.attrs["notes"]`` says how each
    figure was obtained; ``df.attrs["runs"]`` maps variants to run ids. With ``save_dir``, each variant
    is saved there (``JOB-VARIANT.pt``, the bytes counted as ``size_bytes``; column ``saved``).
    """
    import pandas as pd

    rows, notes = run_comparison(model, sample_input, variants, eval_fn=eval_fn, calibration=calibration,
                                 n_batches=n_batches, warmup=warmup, min_time_s=min_time_s, job=job, project=project,
                                 tags=tags, socket=socket, save_dir=save_dir)
    df = pd.DataFrame(rows).set_index("variant", drop=False)
    df.index.name = None
    df.attrs["notes"] = notes
    df.attrs["runs"] = {r["variant"]: r["run"] for r in rows}
    return df
