"""The ``carbond`` command: arguments, exit codes and output — nothing else.

Exit codes: 0 ok; 1 runtime failure; 2 bad usage, config or input. Heavy modules are
imported inside the command that needs them, so ``carbond --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from carbond import __version__
from carbond.errors import CarbondError, DaemonUnavailableError, UsageError
from carbond.jobs_cli import build_jobs_parser
from carbond.optimize.cli import build_optimize_parser
from carbond.reports.cli import build_estimate_parser, build_report_parser
from carbond.track_cli import build_track_parser

log = logging.getLogger("carbond")

EPILOG = """\
Store URLs: sqlite:///ABS/PATH.db (default), influxdb+v1://[USER:PASS@]HOST:PORT/DB,
influxdb+v2://HOST:PORT/BUCKET?org=ORG. Times: ISO 8601 or relative (-7d, -1h).
Exit codes: 0 ok, 1 runtime failure, 2 bad usage, config or input.
Docs: docs/client.md, docs/configuration.md, docs/schema.md, docs/methodology.md,
docs/reports.md, docs/optimize.md, docs/deployment.md, docs/troubleshooting.md."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its message shape
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_float(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number of seconds, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be greater than 0, got {text!r}")
        return value

    return parse


def _duration(text: str) -> float:
    from carbond.timeutil import parse_duration_s

    try:
        return parse_duration_s(text, name="--duration")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="carbond", description="Measure the energy, carbon, water and embodied impact of AI work.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"carbond {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", metavar="F", help="TOML config file (default $CARBOND_CONFIG, else "
                        "$CONFIGURATION_DIRECTORY/carbond.toml under systemd, else /etc/carbond/carbond.toml)")

    r = sub.add_parser("run", help="run the daemon: sample every device, store energy and emissions",
                       description="Run the daemon in the foreground until SIGTERM/SIGINT or --duration. "
                       "Every point is flushed before it exits. SIGHUP re-reads the configuration (interval, intensity, factors, "
                       "log level change live; the store, sensors and socket at a restart). Under systemd it speaks "
                       "sd_notify (Type=notify, WatchdogSec=).")
    config_arg(r)
    r.add_argument("--store", metavar="URL", help="where points go (default: sqlite under $STATE_DIRECTORY "
                   "or $XDG_DATA_HOME/carbond)")
    r.add_argument("--region", metavar="ZONE", help="grid zone for carbon intensity (e.g. DE, FR, US)")
    r.add_argument("--interval", metavar="S", type=_positive_float("--interval"), help="seconds between ticks (default 1)")
    r.add_argument("--duration", metavar="S", type=_duration, help="stop after this long (e.g. 30, 15m, 2h)")
    r.add_argument("--socket", metavar="PATH", help="Unix socket for status and job messages")
    r.add_argument("--simulate-gpus", metavar="N", type=int, help="add N simulated GPUs (source=simulated)")
    r.add_argument("--pue", metavar="X", type=float, help="facility PUE (default: the cloud region's published PUE, else 1.56)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="live power, intensity and active runs from the daemon")
    config_arg(s)
    s.add_argument("--socket", metavar="PATH", help="daemon socket")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.set_defaults(func=cmd_status)

    d = sub.add_parser("devices", help="detected devices and the energy source each uses")
    config_arg(d)
    d.add_argument("--socket", metavar="PATH", help="daemon socket (asked first; else this machine is probed)")
    d.add_argument("--simulate-gpus", metavar="N", type=int, help="probe with N simulated GPUs")
    d.add_argument("--json", action="store_true", help="print one JSON document")
    d.set_defaults(func=cmd_devices)

    i = sub.add_parser("intensity", help="grid carbon intensity of a zone, with basis, source and year")
    config_arg(i)
    i.add_argument("zone", nargs="?", metavar="ZONE", help="zone code, alpha-3 or name (default: the configured zone)")
    i.add_argument("--at", metavar="T", help="the moment (ISO 8601 or relative, e.g. -3h); the configured provider "
                   "answers for its zone, the table for any other")
    i.add_argument("--list", action="store_true", help="list every zone")
    i.add_argument("--json", action="store_true", help="print one JSON document")
    i.set_defaults(func=cmd_intensity)

    f = sub.add_parser("forecast", help="the greenest start time for a job of a given length",
                       description="Pick the start time with the lowest expected emissions for a job of --duration "
                       "that must finish within --within, from the configured provider's forecast (GB Carbon "
                       "Intensity, Electricity Maps, WattTime marginal, or a series CSV), and the saving against "
                       "starting now.")
    config_arg(f)
    f.add_argument("--duration", metavar="D", required=True, help="job length (e.g. 90m, 6h)")
    f.add_argument("--within", metavar="W", default="48h", help="the job must finish within this window (default 48h)")
    f.add_argument("--zone", metavar="Z", help="zone or region the provider needs (default: the configured one)")
    f.add_argument("--json", action="store_true", help="print one JSON document")
    f.set_defaults(func=cmd_forecast)

    e = sub.add_parser("export", help="points from a store as CSV, JSON lines or line protocol")
    config_arg(e)
    e.add_argument("--store", metavar="URL", help="store to read (default: the configured store)")
    e.add_argument("--measurement", metavar="M", help="device, host, job, run or carbond (default: all)")
    e.add_argument("--since", metavar="T", help="from this time (ISO 8601 or relative, e.g. -1h)")
    e.add_argument("--until", metavar="T", help="up to (not including) this time")
    e.add_argument("--format", choices=("csv", "jsonl", "lp"), default="jsonl", help="output format (default jsonl)")
    e.add_argument("--out", metavar="PATH", help="write to a file instead of stdout")
    e.set_defaults(func=cmd_export)

    st = sub.add_parser("store", help="store tools")
    stsub = st.add_subparsers(dest="store_command", metavar="SUBCOMMAND", required=True, parser_class=_Parser)
    si = stsub.add_parser("init", help="create the database, retention policies and hourly rollups (InfluxDB 1.x)",
                          description="InfluxDB 1.x: create the database if missing, its raw retention policy "
                          "(--raw-duration), a carbond_1h retention policy and one hourly continuous query per "
                          "measurement. Idempotent; never shortens an existing retention policy without --force. "
                          "SQLite needs nothing; InfluxDB 2.x/3.x buckets are created in InfluxDB itself.")
    config_arg(si)
    si.add_argument("--store", metavar="URL", help="store to initialise (default: the configured store)")
    si.add_argument("--raw-duration", default="30d", metavar="D", help="how long raw points are kept (default 30d)")
    si.add_argument("--rollup-duration", default="INF", metavar="D", help="how long hourly rollups are kept (default INF)")
    si.add_argument("--force", action="store_true", help="allow shortening an existing retention policy")
    si.set_defaults(func=cmd_store_init)

    build_track_parser(sub)
    build_jobs_parser(sub)
    build_report_parser(sub)  # carbond report lifecycle | compare
    build_estimate_parser(sub)  # carbond estimate
    build_optimize_parser(sub)  # carbond optimize

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True, parser_class=_Parser)
    cc = csub.add_parser("check", help="validate the config and print every effective setting and its origin",
                         description="Validate defaults < file < CARBOND_* environment < flags and print the "
                         "effective settings with where each came from. Secrets are redacted.")
    config_arg(cc)
    cc.add_argument("--json", action="store_true", help="print one JSON document")
    cc.set_defaults(func=cmd_config_check)
    return p


# --- commands -------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, **flags: Any) -> Any:
    from carbond.config import load_settings

    return load_settings(getattr(args, "config", None), flags)


def cmd_run(args: argparse.Namespace) -> int:
    from carbond.daemon import Daemon
    from carbond.sdnotify import Notifier
    from carbond.sensors import build_sensors
    from carbond.store import open_configured_store

    flags = {
        "store.url": args.store, "region.zone": args.region, "daemon.interval_s": args.interval,
        "daemon.socket": args.socket, "daemon.simulate_gpus": args.simulate_gpus, "impacts.pue": args.pue,
    }
    settings = _settings(args, **flags).settings
    _set_level(settings.daemon.log_level, args.verbose)
    store = open_configured_store(settings.store)
    try:
        sensors = build_sensors(settings)
        # SIGHUP re-reads the same sources (file, environment, these flags); Notifier speaks sd_notify under systemd
        daemon = Daemon(settings, sensors, store, reload_settings=lambda: _settings(args, **flags).settings,
                        notifier=Notifier())
    except BaseException:
        store.close()
        raise
    daemon.run(duration_s=args.duration)
    return 0


def _socket(args: argparse.Namespace) -> str:
    return _settings(args, **{"daemon.socket": args.socket}).settings.daemon.socket


def cmd_status(args: argparse.Namespace) -> int:
    from carbond import ipc

    status = ipc.request(_socket(args), "status")
    if args.json:
        _print_json(status)
        return 0
    last = status.get("last_tick") or {}
    print(f"carbond {status['version']} on {status['host']} (pid {status['pid']}), up {status['uptime_s']:.0f}s, "
          f"every {status['interval_s']:g}s → {status['store']}")
    if not last:
        print("no interval measured yet")
    else:
        print(f"power {last['power_w']:.1f} W   intensity {last['intensity_g_per_kwh']:g} gCO2e/kWh "
              f"({last['zone']}, {last['intensity_source']}, {last['basis']})   PUE {last['pue']:g}   "
              f"{last['co2_g_per_h']:.1f} gCO2e/h")
        print(f"{'DEVICE':8} {'KIND':5} {'SOURCE':10} {'POWER_W':>9} {'UTIL_%':>7}  MODEL")
        for d in last["devices"]:
            util = "" if d["utilization_pct"] is None else f"{d['utilization_pct']:.0f}"
            print(f"{d['device']:8} {d['kind']:5} {d['source']:10} {d['power_w']:9.1f} {util:>7}  {d['model']}")
    t = status["totals"]
    print(f"since start: {t['energy_j'] / 3.6e6:.6f} kWh, {t['co2_g']:.3f} gCO2e, {t['water_l']:.4f} L water, "
          f"{t['embodied_g']:.3f} gCO2e embodied")
    st = status["stats"]
    print(f"ticks {st['ticks']}, points written {st['points_written']}, buffered {st['buffered_points']}, "
          f"write errors {st['write_errors']}")
    runs = status.get("runs") or []
    print(f"active runs: {len(runs)}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from carbond import ipc

    origin = "daemon"
    try:
        if args.simulate_gpus is not None:
            raise DaemonUnavailableError("probe requested")
        devices = ipc.request(_socket(args), "devices")
    except DaemonUnavailableError:
        from carbond.sensors import build_sensors

        origin = "probe"
        settings = _settings(args, **{"daemon.simulate_gpus": args.simulate_gpus}).settings
        sensors = build_sensors(settings)
        devices = [vars(d) for s in sensors for d in s.devices()]
        for s in sensors:
            s.close()
    if args.json:
        _print_json({"origin": origin, "devices": devices})
        return 0
    print(f"{'DEVICE':8} {'KIND':5} {'SOURCE':11} {'MODEL':28} DETAIL")
    for d in devices:
        print(f"{d['device']:8} {d['kind']:5} {d['source']:11} {d['model'][:28]:28} {d['detail']}")
    print(f"({'from the running daemon' if origin == 'daemon' else 'probed now; no daemon answered'})")
    return 0


def cmd_intensity(args: argparse.Namespace) -> int:
    from carbond.intensity.commands import intensity_report, zone_list
    from carbond.timeutil import parse_time

    if args.list:
        rows, lines = zone_list()
        if args.json:
            _print_json(rows)
        else:
            print("\n".join(lines))
        return 0
    from carbond.daemon import provider_settings

    at = parse_time(args.at, name="--at") if args.at else None
    doc, line = intensity_report(provider_settings(_settings(args).settings), args.zone, at)
    if args.json:
        _print_json(doc)
    else:
        print(line)
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from carbond.daemon import provider_settings
    from carbond.intensity.commands import forecast_report
    from carbond.timeutil import parse_duration_s

    duration_s = parse_duration_s(args.duration, name="--duration")
    within_s = parse_duration_s(args.within, name="--within")
    doc, lines = forecast_report(provider_settings(_settings(args).settings), duration_s, within_s, zone=args.zone)
    if args.json:
        _print_json(doc)
    else:
        print("\n".join(lines))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from carbond.export import export
    from carbond.store import open_configured_store
    from carbond.store.base import MEASUREMENTS
    from carbond.timeutil import parse_time, to_ns

    if args.measurement and args.measurement not in MEASUREMENTS:
        raise UsageError(f"--measurement {args.measurement!r} is not one of {', '.join(MEASUREMENTS)}")
    since = to_ns(parse_time(args.since, name="--since")) if args.since else None
    until = to_ns(parse_time(args.until, name="--until")) if args.until else None
    store = open_configured_store(_settings(args, **{"store.url": args.store}).settings.store, readonly=True)
    try:
        if args.out:
            try:
                out = open(args.out, "w", encoding="utf-8", newline="")
            except OSError as exc:
                raise UsageError(f"--out {args.out}: {exc.strerror}") from exc
            with out:
                n = export(store, out, args.format, args.measurement, since, until)
            log.info("wrote %d points to %s", n, args.out)
        else:
            n = export(store, sys.stdout, args.format, args.measurement, since, until)
        if n == 0:
            print(f"carbond: no points in {store.url} for that selection", file=sys.stderr)
    finally:
        store.close()
    return 0


def cmd_store_init(args: argparse.Namespace) -> int:
    from carbond.store import open_configured_store, parse_store_url

    settings = _settings(args, **{"store.url": args.store}).settings
    parsed = parse_store_url(settings.store.url)
    if parsed.kind == "sqlite":
        from carbond.store.sqlite import SqliteStore

        SqliteStore(parsed.path).close()  # creates the file and its schema
        print(f"{parsed.redacted()}: SQLite store ready (schema, WAL); nothing else to create")
        return 0
    from carbond.store.influx_init import init_influx

    store = open_configured_store(settings.store, readonly=True)
    try:
        for line in init_influx(store, raw_duration=args.raw_duration, rollup_duration=args.rollup_duration,
                                every="1h", resample_for="6h", force=args.force):
            print(line)
    finally:
        store.close()
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    resolved = _settings(args)
    rows = resolved.effective(redact=True)
    if args.json:
        _print_json({"config_file": str(resolved.config_path) if resolved.config_path else None,
                     "settings": {p: {"value": v, "origin": o} for p, v, o in rows}})
        return 0
    print(f"config file: {resolved.config_path or '(none; defaults, environment and flags only)'}")
    width = max(len(p) for p, _, _ in rows)
    for path, value, origin in rows:
        print(f"{path:{width}}  {json.dumps(value):40}  {origin}")
    print("config OK")
    return 0


# --- plumbing -------------------------------------------------------------------------------


def _print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def _set_level(level: str, verbose: bool) -> None:
    logging.getLogger().setLevel(logging.DEBUG if verbose else getattr(logging, level.upper()))


TIME_FLAGS = ("--since", "--until", "--at")


def _join_relative_times(argv: Sequence[str]) -> list[str]:
    """``--since -1h`` → ``--since=-1h``: argparse would take ``-1h`` for an option."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--":  # a command to run (carbond track -- CMD ...): leave it exactly as given
            out.append(arg)
            out.extend(it)
            break
        if arg in TIME_FLAGS:
            value = next(it, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_relative_times(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apscheduler",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"carbond: error: {exc}", file=sys.stderr)
        return 2
    except CarbondError as exc:
        print(f"carbond: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
