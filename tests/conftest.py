"""Shared fixtures: an isolated environment for real ``carbond`` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def wait_for(predicate: Callable[[], object], timeout_s: float = 30.0, interval_s: float = 0.05) -> object:
    """Poll until ``predicate`` returns something truthy; fail after a generous timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)


class Carbond:
    """Runs the real ``carbond`` CLI in a subprocess with an isolated environment."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CARBOND_")}
        self.env.update({
            "HOME": str(tmp / "home"),
            "XDG_DATA_HOME": str(tmp / "data"),
            "XDG_RUNTIME_DIR": str(tmp / "run"),
            "CARBOND_SENSORS_NVML": "false",  # no real GPU on test machines; tests opt in to simulated ones
        })
        self.env.pop("STATE_DIRECTORY", None)
        self.env.pop("RUNTIME_DIRECTORY", None)
        (tmp / "run").mkdir(exist_ok=True)
        self.socket = str(tmp / "run" / "carbond.sock")
        self.db = tmp / "c.db"
        self.store = f"sqlite://{self.db}"

    def __call__(self, *args: str, timeout: float = 120, check: bool = False, **kw: object) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "carbond", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"carbond {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "carbond", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def status(self, min_ticks: int = 0, socket: str | None = None) -> dict | None:
        """The running daemon's ``status --json`` once it has made ``min_ticks`` ticks; None before."""
        r = self("status", "--json", "--socket", socket or self.socket)
        if r.returncode != 0:
            return None
        doc = json.loads(r.stdout)
        return doc if doc["stats"]["ticks"] >= min_ticks else None

    def export(self, measurement: str, store: str | None = None) -> list[dict]:
        out = self("export", "--store", store or self.store, "--measurement", measurement, "--format", "jsonl",
                   check=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def carbond(tmp_path: Path) -> Iterator[Carbond]:
    yield Carbond(tmp_path)
