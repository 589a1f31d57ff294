"""``carbond report lifecycle|compare`` and ``carbond estimate``: arguments, output, exit codes.

``build_report_parser(sub)`` and ``build_estimate_parser(sub)`` declare the commands on the
main parser's ``add_subparsers`` object (``carbond/cli.py``); :func:`main` runs them on their
own (``python -m carbond.reports ...``, which scheduled reports use). Heavy modules (pandas,
matplotlib) load inside the commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from carbond.errors import CarbondError, UsageError
from carbond.reports.formats import FORMATS

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F", help="TOML config file (default /etc/carbond/carbond.toml, or $CARBOND_CONFIG)")
    p.add_argument("--store", metavar="URL", help="store to read (default: the configured store)")
    p.add_argument("--since", metavar="T", help="from this time (ISO 8601 or relative, e.g. -30d)")
    p.add_argument("--until", metavar="T", help="up to (not including) this time")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (default), csv, json, md, or html (one self-contained file with plots)")
    p.add_argument("--out", metavar="PATH", help="write to this file instead of stdout")


def build_report_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``carbond report lifecycle`` and ``carbond report compare``."""
    r = sub.add_parser("report", help="lifecycle footprints and run comparisons (tables, files, plots)",
                       description="Reports from the store: a project's lifecycle footprint by phase, and runs or jobs "
                       "side by side. Needs the reports extra (pip install 'carbond[reports]').")
    rsub = r.add_subparsers(dest="report_command", metavar="REPORT", required=True, parser_class=type(r))
    lc = rsub.add_parser("lifecycle", help="footprint by phase: measured runs plus a projected scenario",
                         description="Energy, CO2, water and embodied carbon by lifecycle phase (development, training, "
                         "validation, deployment, inference and custom phases), measured from runs and projected from "
                         "an optional scenario file, with each row's share and a TOTAL row. See docs/reports.md.")
    lc.add_argument("--project", metavar="P", help="only this project's runs (default: every project)")
    lc.add_argument("--scenario", metavar="F", help="TOML scenario for projected rows (docs/reports.md)")
    _common(lc)
    lc.set_defaults(func=cmd_lifecycle)
    cp = rsub.add_parser("compare", help="runs or jobs side by side against a baseline",
                         description="Energy, CO2, water, duration, energy per unit of work and logged metrics of runs "
                         "(or jobs), the change against a baseline in %, and an energy-vs-metric Pareto view.")
    which = cp.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="R", nargs="+", action="extend", help="run ids to compare")
    which.add_argument("--job", metavar="J", nargs="+", action="extend", help="job names to compare (their runs summed)")
    cp.add_argument("--baseline", metavar="X", help="the run or job the others are compared with (default: the first)")
    cp.add_argument("--per", metavar="UNIT", help="energy and CO2 per unit of work logged by the runs (samples, tokens, "
                    "requests, ...)")
    cp.add_argument("--metric", metavar="M", help="metric for the Pareto view (default: accuracy, else the first logged)")
    cp.add_argument("--metric-goal", choices=("max", "min"), default="max", help="whether higher (max, default) or lower "
                    "(min, e.g. loss) values of the metric are better")
    _common(cp)
    cp.set_defaults(func=cmd_compare)
    return r


def build_estimate_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``carbond estimate``."""
    e = sub.add_parser("estimate", help="what-if footprint from GPU-hours × power (or energy) × PUE × intensity",
                       description="Estimate the energy, CO2 and optionally water and embodied carbon of a job from its "
                       "GPU-hours and power (or its energy), the facility PUE and the grid intensity. Every input is "
                       "echoed with its unit and origin; missing factors take carbond's cited defaults.")
    e.add_argument("--config", metavar="F", help="TOML config file (the default region comes from it)")
    e.add_argument("--gpu-hours", metavar="N", type=float, help="GPU-hours (h), with --gpu-power-w")
    e.add_argument("--gpu-power-w", metavar="W", type=float, help="average power per GPU (W)")
    e.add_argument("--energy-kwh", metavar="E", type=float, help="IT energy (kWh), instead of GPU-hours × power")
    where = e.add_mutually_exclusive_group()
    where.add_argument("--region", metavar="ZONE", help="grid zone for intensity, PUE and water defaults (default: the "
                       "configured region)")
    where.add_argument("--intensity", metavar="G", type=float, help="grid intensity (gCO2e/kWh)")
    e.add_argument("--pue", metavar="X", type=float, help="facility PUE (default: the zone's published PUE, else 1.56)")
    e.add_argument("--wue-site", metavar="L", type=float, help="on-site water (L/kWh); estimates water")
    e.add_argument("--wue-source", metavar="L", type=float, help="water of electricity generation (L/kWh); estimates water")
    e.add_argument("--embodied-kg", metavar="KG", type=float, help="embodied kgCO2e per device; estimates embodied carbon")
    e.add_argument("--lifetime-years", metavar="Y", type=float, help="device service life (default 6 years)")
    e.add_argument("--device-hours", metavar="H", type=float, help="device-hours for embodied carbon (default: --gpu-hours)")
    e.add_argument("--json", action="store_true", help="print one JSON document")
    e.set_defaults(func=cmd_estimate)
    return e


# --- commands ---------------------------------------------------------------------------------------------------


def _times(args: argparse.Namespace) -> tuple[int | None, int | None]:
    from carbond.timeutil import parse_time, to_ns

    since = to_ns(parse_time(args.since, name="--since")) if args.since else None
    until = to_ns(parse_time(args.until, name="--until")) if args.until else None
    if since is not None and until is not None and since >= until:
        raise UsageError("--since must be before --until")
    return since, until


def _settings(args: argparse.Namespace, **flags: Any) -> Any:
    from carbond.config import load_settings

    return load_settings(getattr(args, "config", None), flags).settings


def _open_store(settings: Any) -> Any:
    from carbond.store import open_configured_store

    return open_configured_store(settings.store, readonly=True)


def write_output(text: str, out: str | None) -> None:
    """To stdout, or atomically to ``out`` (a temporary file renamed into place)."""
    if not out:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(out)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote %s", target)


def _no_data(what: str, store: Any, since: int | None, until: int | None) -> int:
    from carbond.timeutil import iso

    span = f" between {iso(since) if since else 'the start'} and {iso(until) if until else 'now'}"
    print(f"carbond: no data for {what} in {store.url}{span if since or until else ''}", file=sys.stderr)
    return 0


def _emit(report: Any, args: argparse.Namespace) -> int:
    from carbond.reports.render import render

    write_output(render(report, args.format), args.out)
    return 0


def _need_reports_extra(fmt: str) -> None:
    import importlib.util

    needed = ["pandas", *(["matplotlib"] if fmt == "html" else [])]
    absent = [m for m in needed if importlib.util.find_spec(m) is None]
    if absent:
        raise CarbondError(f"carbond report needs {' and '.join(absent)}: pip install 'carbond[reports]'")


def cmd_lifecycle(args: argparse.Namespace) -> int:
    _need_reports_extra(args.format)
    from carbond.reports.build import lifecycle_report
    from carbond.reports.progress import Progress
    from carbond.reports.scenario import load_scenario

    since, until = _times(args)
    scenario = load_scenario(args.scenario) if args.scenario else None
    settings = _settings(args, **{"store.url": args.store})
    store = _open_store(settings)
    progress = Progress()
    try:
        report = lifecycle_report(store, project=args.project, since_ns=since, until_ns=until, scenario=scenario,
                                  default_zone=settings.region.zone,
                                  default_intensity_g_per_kwh=settings.region.intensity_g_per_kwh,
                                  plots=args.format == "html", progress=progress)
    finally:
        progress.close()
        store.close()
    if report is None:
        return _no_data(f"project {args.project!r}" if args.project else "any project", store, since, until)
    return _emit(report, args)


def cmd_compare(args: argparse.Namespace) -> int:
    _need_reports_extra(args.format)
    from carbond.reports.build import compare_report
    from carbond.reports.progress import Progress

    since, until = _times(args)
    settings = _settings(args, **{"store.url": args.store})
    store = _open_store(settings)
    progress = Progress()
    try:
        report = compare_report(store, runs=args.run or (), jobs=args.job or (), baseline=args.baseline, per=args.per,
                                metric=args.metric, maximize=args.metric_goal == "max", since_ns=since, until_ns=until,
                                plots=args.format == "html", progress=progress)
    finally:
        progress.close()
        store.close()
    if report is None:
        what = f"run(s) {', '.join(args.run)}" if args.run else f"job(s) {', '.join(args.job)}"
        return _no_data(what, store, since, until)
    return _emit(report, args)


def cmd_estimate(args: argparse.Namespace) -> int:
    from carbond.reports.estimate import estimate

    default_zone = "WORLD"
    if args.region is None and args.intensity is None:
        default_zone = _settings(args).region.zone
    result = estimate(gpu_hours=args.gpu_hours, gpu_power_w=args.gpu_power_w, energy_kwh=args.energy_kwh, region=args.region,
                      intensity_g_per_kwh=args.intensity, pue=args.pue, wue_site_l_per_kwh=args.wue_site,
                      wue_source_l_per_kwh=args.wue_source, embodied_kg=args.embodied_kg,
                      lifetime_years=args.lifetime_years, device_hours=args.device_hours, default_zone=default_zone)
    if args.json:
        json.dump(result.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(result.lines()))
    return 0
