"""The systemd files in deploy/systemd: `systemd-analyze verify` passes, sysusers creates the user and group,
and the units keep the settings the daemon and docs/deployment.md rely on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
SYSTEM_UNIT = SYSTEMD / "carbond.service"
USER_UNIT = SYSTEMD / "carbond-user.service"
SYSUSERS = SYSTEMD / "carbond.sysusers"
SYSTEM_EXEC = "/opt/carbond/bin/carbond"


def directives(unit: Path) -> dict[str, list[str]]:
    """``Key`` → every value it is given (systemd allows repeats), comments and sections aside."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _carbond_executable(directory: Path) -> Path:
    """An executable `carbond` that runs this checkout (verify insists ExecStart exists and is executable)."""
    exe = directory / "carbond"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m carbond \"$@\"\n")
    exe.chmod(0o755)
    return exe


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    return path


def _verify(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([_analyze(), *args], capture_output=True, text=True, timeout=120, env=env)


def test_system_unit_passes_systemd_analyze_verify(tmp_path):
    exe = _carbond_executable(tmp_path)
    unit = tmp_path / "carbond.service"
    unit.write_text(SYSTEM_UNIT.read_text().replace(SYSTEM_EXEC, str(exe)))
    r = _verify(["verify", str(unit)], dict(os.environ, SYSTEMD_LOG_LEVEL="notice"))
    output = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and "carbond.service" not in output, output  # warnings name the unit and the line


def test_user_unit_passes_systemd_analyze_verify(tmp_path):
    home, runtime = tmp_path / "home", tmp_path / "xdg"
    venv_bin = home / ".local/share/carbond/venv/bin"
    venv_bin.mkdir(parents=True)
    runtime.mkdir(mode=0o700)
    _carbond_executable(venv_bin)
    unit = tmp_path / "carbond.service"
    shutil.copy(USER_UNIT, unit)
    r = _verify(["--user", "verify", str(unit)], dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(runtime)))
    output = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and "carbond.service" not in output, output


def test_verify_catches_a_broken_unit(tmp_path):
    """The check above would notice a mistake: a typo'd key and a missing ExecStart binary."""
    unit = tmp_path / "carbond.service"
    unit.write_text(SYSTEM_UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    r = _verify(["verify", str(unit)], dict(os.environ))
    output = r.stdout + r.stderr
    assert "ProtectSytem" in output and "not executable" in output and r.returncode != 0


def test_sysusers_creates_the_carbond_user_and_group(tmp_path):
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed (Debian package: systemd)")
    (tmp_path / "etc").mkdir()
    r = subprocess.run([sysusers, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert "carbond" in groups
    user = passwd["carbond"]
    assert user[3] == groups["carbond"][2]  # primary group carbond: the socket it creates belongs to the group
    assert user[5] == "/var/lib/carbond" and user[6] == "/usr/sbin/nologin"
    assert int(user[2]) < 1000  # a system user


def test_system_unit_settings_the_daemon_relies_on():
    d = directives(SYSTEM_UNIT)
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["ExecStart"] == f"{SYSTEM_EXEC} run"  # what scripts/quickstart-service.sh runs outside systemd
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"  # carbond reloads its configuration on SIGHUP
    assert one["Restart"] == "on-failure" and one["WatchdogSec"].endswith("s")
    assert (one["StateDirectory"], one["RuntimeDirectory"], one["ConfigurationDirectory"]) == ("carbond",) * 3
    assert (one["User"], one["Group"]) == ("carbond", "carbond")
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
                       "PrivateTmp": "yes", "DevicePolicy": "closed"}.items():
        assert one[key] == value, key
    caps = {"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}
    assert set(one["AmbientCapabilities"].split()) == caps == set(one["CapabilityBoundingSet"].split())
    assert "char-nvidia* rw" in d["DeviceAllow"]
    assert "~ptrace process_vm_readv process_vm_writev" in d["SystemCallFilter"]
    for forbidden in ("PrivateDevices", "ProcSubset", "ProtectProc", "PrivateUsers"):  # would blind the daemon
        assert forbidden not in d, forbidden


def test_user_unit_puts_the_socket_where_clients_look():
    one = {k: v[-1] for k, v in directives(USER_UNIT).items()}
    assert one["Type"] == "notify"
    # clients without RUNTIME_DIRECTORY look in $XDG_RUNTIME_DIR/carbond.sock, which %t is for a user manager
    assert one["ExecStart"].endswith("carbond run --socket %t/carbond.sock")
    assert "User" not in one and "AmbientCapabilities" not in one
