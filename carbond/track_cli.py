"""``carbond track --job NAME [...] -- CMD [ARGS...]``: run a command as one run.

The command runs as a child, without a shell, with ``CARBOND_RUN`` (and ``CARBOND_JOB``,
``CARBOND_PROJECT``, ``CARBOND_PHASE``, ``CARBOND_SOCKET``) in its environment, so its
descendants and any ``carbond.track()`` inside it belong to the same run. The run is
registered with the daemon before the command starts, with this process as its root (the
daemon follows the descendants); without a daemon this process measures its own tree
in-process. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to this process are
forwarded to the command — except those the terminal sends to the whole foreground process
group (Ctrl-C, Ctrl-\\, hangup), which the command has already received. The exit code is
the command's (128+N when a signal N killed it); the run ends ``finished`` on 0, ``failed``
otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from carbond.errors import UsageError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
SI_KERNEL = 0x80  # si_code of a signal the kernel raised (the tty driver); kill() gives SI_USER (0)
USAGE = ("carbond track --job NAME [--project P] [--phase PH] [--tag K=V]... [--run ID] [--socket PATH] [--quiet] "
         "-- CMD [ARGS...]")


def build_track_parser(sub: Any) -> argparse.ArgumentParser:
    """Declare ``carbond track`` on the ``add_subparsers`` object of the main parser."""
    t = sub.add_parser(
        "track", help="run a command as a run: its energy, carbon and water, and its exit code", usage=USAGE,
        description="Run CMD (without a shell) as one run of JOB: registered with the daemon (or measured in-process "
        "when none answers), signals forwarded, the command's exit code returned (128+N for a signal), the run marked "
        "finished or failed, and a one-line summary on stderr. CMD sees CARBOND_RUN, so carbond.track() inside it "
        "joins the same run.")
    t.add_argument("--config", metavar="F", help="TOML config file (default /etc/carbond/carbond.toml, or $CARBOND_CONFIG)")
    t.add_argument("--job", metavar="NAME", required=True, help="job name (e.g. bert-ft)")
    t.add_argument("--project", metavar="P", help="project (default: default)")
    t.add_argument("--phase", metavar="PH", help="development, training, validation, deployment, inference or a "
                   "lower-case name (default: development)")
    t.add_argument("--tag", metavar="K=V", action="append", default=[], help="a tag of the run; repeatable")
    t.add_argument("--run", metavar="ID", help="join this run id (default: $CARBOND_RUN, $TORCHELASTIC_RUN_ID, "
                   "$SLURM_JOB_ID[.$SLURM_STEP_ID], else a new one)")
    t.add_argument("--socket", metavar="PATH", help="daemon socket")
    t.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    t.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the command to run")
    t.set_defaults(func=run_track)
    return t


# --- arguments --------------------------------------------------------------------------------------------


def parse_tags(items: Sequence[str]) -> dict[str, str]:
    from carbond.client import LABEL, MAX_TAGS, NAME, RESERVED_TAGS

    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not NAME.match(key) or key in RESERVED_TAGS:
            raise UsageError(f"--tag {item!r}: expected KEY=VALUE with KEY matching [A-Za-z_][A-Za-z0-9_]* and not one "
                             f"of {', '.join(sorted(RESERVED_TAGS))}")
        if not LABEL.match(value):
            raise UsageError(f"--tag {item!r}: the value must be 1–128 printable characters")
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise UsageError(f"--tag: at most {MAX_TAGS} tags, got {len(tags)}")
    return tags


def _check(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    from carbond.client import LABEL, PHASE

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError(f"track: no command given; usage: {USAGE}")
    for flag, value in (("--job", args.job), ("--project", args.project), ("--run", args.run)):
        if value is not None and not LABEL.match(value):
            raise UsageError(f"{flag} {value!r}: must be 1–128 printable characters")
    if args.phase is not None and not PHASE.match(args.phase):
        raise UsageError(f"--phase {args.phase!r}: use development, training, validation, deployment, inference or a "
                         "lower-case name ([a-z][a-z0-9_-]*, at most 32 characters)")
    return command, parse_tags(args.tag)


# --- the child ---------------------------------------------------------------------------------------------


def child_env(base: dict[str, str], run: Any, socket_path: str) -> dict[str, str]:
    """The command's environment: the run it belongs to, so its descendants map to the same run."""
    from carbond.client import INPROCESS_ENV

    env = dict(base)
    for key, value in (("CARBOND_RUN", run.run_id), ("CARBOND_JOB", run.job), ("CARBOND_PROJECT", run.project),
                       ("CARBOND_PHASE", run.phase), ("CARBOND_SOCKET", socket_path),
                       (INPROCESS_ENV, run.run_id if run.mode == "in-process" else None)):
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env


def exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _forward(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        child.send_signal(signum)
    except OSError:
        pass  # already gone


def wait_forwarding(child: subprocess.Popen[bytes], caught: list[int]) -> int:
    """Wait for the child, forwarding the signals sent to this process; the child's exit code.

    ``caught`` holds signals a handler queued before the child existed. The signals are then
    blocked and taken with ``sigtimedwait``, which tells who sent them: one the kernel raised
    (the terminal, to the whole foreground process group) already reached the child.
    """
    if threading.current_thread() is not threading.main_thread():
        return exit_code(child.wait())
    waited = {*FORWARDED, signal.SIGCHLD}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        while True:
            while caught:
                _forward(child, caught.pop(0))
            if child.poll() is not None:
                break
            info = signal.sigtimedwait(waited, 0.5)  # SIGCHLD wakes it when the child ends
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            if info.si_code != SI_KERNEL:
                _forward(child, info.si_signo)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # anything still pending goes to the handlers
    return exit_code(child.returncode)


# --- the command -------------------------------------------------------------------------------------------


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"carbond: warning: {str(message).removeprefix('carbond: ')}", file=sys.stderr)


def summary(result: Any, code: int) -> str:
    head = f"carbond: run {result.run_id} ({result.job}) {result.status}, exit {code}, {result.duration_s:.1f} s"
    if result.measured_by == "none":
        return f"{head}: energy not measured (see the warning above)"
    total_j = sum(result.sources.values())
    mix = ", ".join(f"{s} {100 * j / total_j:.0f}%" for s, j in sorted(result.sources.items(), key=lambda kv: -kv[1])
                    if total_j > 0) or "none"
    return (f"{head}: {result.energy_kwh:.6g} kWh, {result.co2_kg:.6g} kgCO2e, {result.water_l:.6g} L water, "
            f"{result.embodied_kg:.6g} kgCO2e embodied; sources {mix} [{result.measured_by}]")


def run_track(args: argparse.Namespace) -> int:
    """``carbond track``: the command's exit code; 2 for bad usage; 126/127 when it cannot be started."""
    try:
        command, tags = _check(args)
        from carbond.config import load_settings

        socket_path = load_settings(args.config, {"daemon.socket": args.socket}).settings.daemon.socket
    except UsageError as exc:
        print(f"carbond: error: {exc}", file=sys.stderr)
        return 2
    from carbond.client import Run, warn_once

    caught: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in FORWARDED}
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            run = Run(args.job, args.project, args.phase, tags, run=args.run, socket=socket_path)
            try:
                run.start()
            except Exception as exc:  # measuring must never stop the command from running
                warn_once(f"could not start run {args.job!r}: {exc!r}")
            try:
                child = subprocess.Popen(command, env=child_env(dict(os.environ), run, socket_path))
            except OSError as exc:
                code = 127 if isinstance(exc, FileNotFoundError) else 126
                print(f"carbond: error: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
                run.end("failed", exit_code=code)
                return code
            run.attach(child.pid)  # counted from its first tick, not from the daemon's next membership pass
            code = wait_forwarding(child, caught)
            result = run.end("finished" if code == 0 else "failed", exit_code=code)
        if result is not None and not args.quiet:
            print(summary(result, code), file=sys.stderr)
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
