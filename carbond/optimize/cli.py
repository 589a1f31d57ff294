"""``carbond optimize MODEL --input-shape ...``: the variants of a saved TorchScript model, measured side by side.

The parser is declared without torch; torch loads inside the command.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path
from typing import Any

from carbond.errors import CarbondError, UsageError
from carbond.reports.formats import FORMATS

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32")
DEFAULT_VARIANTS = "baseline,pruned-30,pruned-channels-25,quantized-int8,pruned-30+quantized-int8"


def build_optimize_parser(sub: Any) -> argparse.ArgumentParser:
    o = sub.add_parser(
        "optimize", help="prune and quantize a TorchScript model; compare variants by size, latency and measured energy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build variants of a saved TorchScript model (torch.jit.save), check that each takes an input of "
        "--input-shape, then benchmark each inside its own carbond run (phase inference, tag variant) and print size, "
        "parameters, non-zeros, FLOPs, latency, throughput and the measured energy and CO2 per item, with the change "
        "against the baseline. The runs land in the store: `carbond report compare --per items --run ...` shows them "
        "again. Needs torch (pip install 'carbond[optimize]'). For accuracy, static int8 or a Python model, use "
        "carbond.optimize.compare() (docs/optimize.md).",
        epilog="variants: baseline | pruned-P (global L1, P% of the weights) | pruned-channels-P (P% of the output "
        "channels of each Linear/Conv but the last) | quantized-int8 (dynamic) | pruned[-channels]-P+quantized-int8\n"
        "example: carbond optimize model.pt --input-shape 32,784 --variants baseline,pruned-50,quantized-int8")
    o.add_argument("model", metavar="MODEL", help="a TorchScript file (torch.jit.save(torch.jit.script(model), MODEL))")
    o.add_argument("--input-shape", metavar="N,D,...", required=True,
                   help="shape of one input batch, batch size first (e.g. 32,784 or 8,3,224,224)")
    o.add_argument("--input-dtype", choices=DTYPES, default="float32",
                   help="dtype of the input (default float32; float inputs are random normal, integer ones zeros)")
    o.add_argument("--variants", metavar="LIST", default=DEFAULT_VARIANTS, help=f"comma-separated (default {DEFAULT_VARIANTS})")
    o.add_argument("--n-batches", metavar="N", type=int, default=50, help="timed forward passes per variant, at least "
                   "(default 50)")
    o.add_argument("--min-time", metavar="S", type=float, default=2.0, help="seconds each variant is timed, at least "
                   "(default 2: the energy of shorter runs is mostly the ends of a sampling interval)")
    o.add_argument("--warmup", metavar="N", type=int, default=5, help="untimed forward passes first (default 5)")
    o.add_argument("--threads", metavar="N", type=int, help="torch CPU threads (default: torch's choice)")
    o.add_argument("--job", metavar="NAME", default="optimize", help="job name of the runs (default optimize)")
    o.add_argument("--project", metavar="P", help="project of the runs")
    o.add_argument("--tag", metavar="K=V", action="append", default=[], help="a tag for every run (repeatable)")
    o.add_argument("--save-dir", metavar="DIR", help="save each variant there as JOB-VARIANT.pt (TorchScript)")
    o.add_argument("--socket", metavar="PATH", help="the daemon's socket (default: the configured one)")
    o.add_argument("--config", metavar="F", help="TOML config file")
    o.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv, json, md or html")
    o.add_argument("--out", metavar="PATH", help="write to this file instead of stdout")
    o.set_defaults(func=cmd_optimize)
    return o


def parse_shape(text: str) -> tuple[int, ...]:
    spec = text.strip()
    shape = tuple(int(p) for p in re.split(r"\s*[,x×]\s*", spec)) if re.fullmatch(r"\d+(\s*[,x×]\s*\d+)*", spec) else ()
    if not shape or any(n < 1 for n in shape):
        raise UsageError(f"--input-shape must be positive integers, batch size first (e.g. 32,784); got {text!r}")
    return shape


def _tags(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag must be KEY=VALUE, got {item!r}")
        out[key] = value
    return out


COLUMNS = (  # key, title, kind, digits, significant
    ("variant", "variant", "text", 0, False), ("size_bytes", "size_bytes", "num", 0, False),
    ("size_change_pct", "size_Δ%", "num", 1, False), ("params", "params", "num", 0, False),
    ("nonzero_params", "nonzero", "num", 0, False), ("flops", "flops", "num", 0, False),
    ("latency_ms_p50", "lat_p50_ms", "num", 3, False), ("latency_ms_p95", "lat_p95_ms", "num", 3, False),
    ("throughput_items_s", "items/s", "num", 0, False), ("energy_j_per_item", "J/item", "num", 4, True),
    ("co2_g_per_1k_items", "gCO2/1k items", "num", 4, True), ("energy_change_pct", "energy_Δ%", "num", 1, False),
    ("energy_source", "energy", "text", 0, False), ("run", "run", "text", 0, False),
)


def cmd_optimize(args: argparse.Namespace) -> int:
    absent = [m for m in ("torch",) if importlib.util.find_spec(m) is None]
    if absent:
        raise CarbondError("carbond optimize needs torch: pip install 'carbond[optimize]'")
    shape = parse_shape(args.input_shape)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    tags = _tags(args.tag)
    for name, value, low in (("--n-batches", args.n_batches, 1), ("--warmup", args.warmup, 0), ("--threads", args.threads, 1)):
        if value is not None and value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    if not args.min_time >= 0:
        raise UsageError(f"--min-time must be 0 or more, got {args.min_time}")
    from carbond.config import load_settings

    socket = load_settings(args.config, {"daemon.socket": args.socket}).settings.daemon.socket

    import torch

    from carbond.optimize.compare import run_comparison
    from carbond.optimize.techniques import parse_variant, quiet
    from carbond.reports.cli import write_output
    from carbond.reports.render import Column, Report, render

    for v in variants:
        parse_variant(v)  # a bad name fails before the model loads
    path = Path(args.model)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        with quiet():
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise UsageError(f"{path} is not a TorchScript file (save one with torch.jit.save(torch.jit.script(model), "
                         f"PATH)); a state dict or a pickled module cannot be rebuilt without its code — use "
                         f"carbond.optimize.compare() from Python for those ({type(exc).__name__})") from exc
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.input_dtype)
    torch.manual_seed(0)
    sample = torch.randn(shape, dtype=dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
    rows, notes = run_comparison(model, sample, variants, n_batches=args.n_batches, warmup=args.warmup,
                                 min_time_s=args.min_time, job=args.job, project=args.project, tags=tags, socket=socket,
                                 save_dir=args.save_dir)
    columns = [Column(key, title, kind, digits, significant) for key, title, kind, digits, significant in COLUMNS]
    if any("saved" in r for r in rows):
        columns.append(Column("saved", "saved", "text"))
    techniques = [f"{r['variant']}: {r['techniques']}" for r in rows]
    report = Report("optimize", f"Variants of {path.name}, input {'×'.join(map(str, shape))} {args.input_dtype}",
                    tuple(columns), tuple(rows), tuple(techniques + notes),
                    {"model": str(path), "input_shape": list(shape), "input_dtype": args.input_dtype, "job": args.job,
                     "project": args.project, "variants": variants})
    write_output(render(report, args.format), args.out)
    return 0
