#!/usr/bin/env python3
"""Validate carbond on a real NVIDIA GPU node (or on simulated GPUs with ``--simulate N``).

    python tests/gpu/validate.py --out DIR            # real NVML (import pynvml), one run, ≤ 4 minutes
    python tests/gpu/validate.py --simulate 2 --out DIR  # the same steps on carbond.sensors.simnvml

Run from the repository root (the working tree is enough: the repo root is put on the path).
Only the standard library is imported up front; carbond, pynvml and torch are imported inside
the steps, so a missing package is a recorded failure, not a crash. Every step records
pass / fail / skipped with a reason; each has its own timeouts, and a watchdog writes what it
has and exits if the whole run overruns its budget. Results: ``DIR/results.json`` (written
after every step) and ``DIR/summary.txt``, plus the daemon's log and its exported points.

Steps:
  env               python, packages, torch + CUDA (probed in a subprocess), libcuda, nvidia-smi
  inventory         driver, per GPU: name, UUID, architecture, power limits, energy counter,
                    instant power field, MIG; what ``python -m carbond devices --json`` reports
  counter_vs_power  under a torch matmul load (else an idle window): NVML energy counter delta
                    vs power usage sampled at ~20 Hz (trapezoid), and vs carbond's NvmlGpus.read()
                    energy at 1 s; pass within 5 % (counter vs power) and 2 % (carbond vs counter)
  tick_cost         median µs of each NVML call carbond makes per tick (read() + processes())
  daemon            ``carbond run`` with NVML while ``carbond track -- python -c <GPU load>`` runs:
                    gpu sources, the workload's pid seen (daemon and NVML), GPU share of the run,
                    host = Σ devices and conservation on every tick, clean SIGTERM exit

Exit code: 0 when no step failed, 1 when one did, 2 on bad usage, 3 when the watchdog fired.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
POWER_TOLERANCE = 0.05  # counter vs integrated power, under load
CARBOND_TOLERANCE = 0.02  # carbond's NvmlGpus energy vs the raw counter over the same window
SAMPLE_PERIOD_S = 0.05  # ~20 Hz power sampling
TICK_CPU_TARGET_US = 500.0  # issue #2: ≤ 0.5 ms CPU per tick (the whole tick; NVML is part of it)
JOB = "gpuval"

# The load: a torch bf16 matmul loop on cuda:0 (mode torch), a bare CUDA context through
# libcuda (mode cudactx: the process is listed by NVML, the GPU stays idle), or a CPU busy
# loop (mode cpu). It writes READY (JSON: pid, NSpid, mode) once warmed up, then runs for
# SECONDS or until STOP exists.
WORKLOAD = r"""
import json, os, sys, time
mode, seconds, ready, stop = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
info = {"pid": os.getpid(), "mode": mode}
try:
    with open("/proc/self/status") as fh:
        info["nspid"] = [int(x) for line in fh if line.startswith("NSpid:") for x in line.split()[1:]]
except OSError:
    pass
step = None
if mode == "torch":
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn_like(a)
    for _ in range(5):
        c = a @ b
    torch.cuda.synchronize()
    info["device"] = torch.cuda.get_device_name(0)
    def step():
        for _ in range(10):
            c = a @ b
        torch.cuda.synchronize()
elif mode == "cudactx":
    import ctypes
    cuda = ctypes.CDLL("libcuda.so.1")
    dev, ctx, mem = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    for name, call in (("cuInit", lambda: cuda.cuInit(0)), ("cuDeviceGet", lambda: cuda.cuDeviceGet(ctypes.byref(dev), 0)),
                       ("cuDevicePrimaryCtxRetain", lambda: cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)),
                       ("cuCtxSetCurrent", lambda: cuda.cuCtxSetCurrent(ctx)),
                       ("cuMemAlloc_v2", lambda: cuda.cuMemAlloc_v2(ctypes.byref(mem), ctypes.c_size_t(64 << 20)))):
        rc = call()
        if rc:
            raise SystemExit(f"{name} failed: CUDA error {rc}")
    def step():
        time.sleep(0.05)
else:
    def step():
        t = time.perf_counter() + 0.05
        while time.perf_counter() < t:
            pass
with open(ready + ".tmp", "w") as fh:
    json.dump(info, fh)
os.replace(ready + ".tmp", ready)
end = time.monotonic() + seconds
while time.monotonic() < end and not os.path.exists(stop):
    step()
"""


# --- results ------------------------------------------------------------------------------------------------


class NotApplicableError(Exception):
    """Raised inside a step: the step (or the rest of it) does not apply here."""


class Step:
    def __init__(self, name: str) -> None:
        self.name = name
        self.status: str | None = None
        self.reason = ""
        self.summary = ""
        self.checks: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}
        self.duration_s = 0.0

    def check(self, name: str, ok: bool | None, detail: str = "", reason: str = "") -> bool:
        """ok None means skipped (reason says why)."""
        status = SKIPPED if ok is None else PASS if ok else FAIL
        self.checks.append({"name": name, "status": status, "detail": detail, **({"reason": reason} if reason else {})})
        return bool(ok)

    def finish(self) -> None:
        statuses = {c["status"] for c in self.checks}
        if self.status is None:
            self.status = FAIL if FAIL in statuses else PASS if PASS in statuses else SKIPPED
        if not self.reason:
            failed = [c["name"] for c in self.checks if c["status"] == FAIL]
            if failed:
                self.reason = "failed: " + ", ".join(failed)
            elif self.status == SKIPPED and self.checks:
                self.reason = "; ".join(c.get("reason", "") for c in self.checks if c.get("reason"))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "reason": self.reason, "summary": self.summary,
                "duration_s": round(self.duration_s, 3), "checks": self.checks, "data": self.data}


class Report:
    def __init__(self, out: Path, mode: str, argv: list[str]) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.doc: dict[str, Any] = {
            "tool": "carbond tests/gpu/validate.py", "mode": mode, "argv": argv, "host": socket.gethostname(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": sys.version.split()[0],
            "complete": False, "aborted": None, "steps": [],
        }
        self.steps: list[Step] = []

    def write(self) -> None:
        with self.lock:
            doc = dict(self.doc)
            doc["steps"] = [s.as_dict() for s in self.steps]
            doc["duration_s"] = round(time.monotonic() - self.t0, 2)
            counts = Counter(s.status or "running" for s in self.steps)
            doc["counts"] = dict(counts)
            doc["ok"] = doc["complete"] and not counts.get(FAIL)
            try:
                body = json.dumps(doc, indent=2, default=str)
            except (RuntimeError, ValueError):  # the watchdog caught a step mid-update: once more, shallower
                doc["steps"] = [{k: v for k, v in s.as_dict().items() if k != "data"} for s in self.steps]
                body = json.dumps(doc, indent=2, default=str)
            tmp = self.out / "results.json.tmp"
            tmp.write_text(body + "\n")
            os.replace(tmp, self.out / "results.json")
            (self.out / "summary.txt").write_text(summary_text(doc))


def summary_text(doc: dict[str, Any]) -> str:
    counts = doc.get("counts", {})
    state = "complete" if doc["complete"] else f"INCOMPLETE ({doc['aborted'] or 'running'})"
    lines = [f"carbond GPU validation, {doc['mode']} mode, host {doc['host']}, {doc['started_utc']}, "
             f"{doc['duration_s']:.1f} s, {state}: pass {counts.get(PASS, 0)}, fail {counts.get(FAIL, 0)}, "
             f"skipped {counts.get(SKIPPED, 0)}"]
    for s in doc["steps"]:
        head = f"[{(s['status'] or 'running'):7}] {s['name']:16} {s['summary']}"
        if s["reason"]:
            head += f"  ({s['reason']})"
        lines.append(head)
        for c in s["checks"]:
            why = " | ".join(line for line in (c["detail"] or c.get("reason", "")).splitlines() if line.strip())
            lines.append(f"    {c['status']:7} {c['name']}: {why}")
    return "\n".join(lines) + "\n"


# --- context: NVML, children, time --------------------------------------------------------------------------


class Ctx:
    def __init__(self, args: argparse.Namespace, report: Report) -> None:
        self.args = args
        self.sim = args.simulate
        self.report = report
        self.deadline = time.monotonic() + args.budget_s
        self.children: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="carbond-gpuval-", dir="/tmp"))
        self._nvml: Any = None
        self.torch_cuda = False
        self.cudactx_ok = False
        self.gpu = args.gpu

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, want: float, floor: float = 1.0) -> float:
        """``want`` seconds, cut to what is left of the budget (but at least ``floor``: cleanups need a moment)."""
        return max(floor, min(want, self.left()))

    def nvml(self) -> Any:
        """The NVML module (real pynvml, or a SimulatedNvml shared by every step), initialised."""
        if self._nvml is None:
            if self.sim:
                from carbond.sensors.simnvml import SimulatedNvml

                self._nvml = SimulatedNvml(self.sim)
            else:
                import pynvml

                self._nvml = pynvml
        self._nvml.nvmlInit()  # reference-counted in NVML; carbond's close() gives one back
        return self._nvml

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.children.append(proc)
        return proc

    def env(self) -> dict[str, str]:
        """An isolated environment for carbond CLI processes (like tests/conftest.py's Carbond)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARBOND_")}
        for d in ("home", "data", "run"):
            (self.tmp / d).mkdir(exist_ok=True)
        env.update({
            "HOME": str(self.tmp / "home"), "XDG_DATA_HOME": str(self.tmp / "data"), "XDG_RUNTIME_DIR": str(self.tmp / "run"),
            "CARBOND_SENSORS_NVML": "false" if self.sim else "true", "CARBOND_STORE_FLUSH_INTERVAL_S": "0.5",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            # the workload's cuda:0 is NVML's gpu index --gpu
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(self.gpu),
        })
        env.pop("STATE_DIRECTORY", None)
        env.pop("RUNTIME_DIRECTORY", None)
        return env

    def cleanup(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                kill_group(proc)


def wait_for(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> Any:
    """Poll until ``predicate`` returns something truthy; None after the timeout (never raises for it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval_s)


def run_cmd(ctx: Ctx, argv: list[str], timeout_s: float, env: dict[str, str] | None = None, floor: float = 1.0) -> dict[str, Any]:
    """A subprocess with a timeout; its outcome as a dict (never raises for a failing command)."""
    t = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=ctx.timeout(timeout_s, floor), env=env, cwd=REPO,
                           start_new_session=True)
        return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr[-4000:], "s": round(time.monotonic() - t, 2)}
    except subprocess.TimeoutExpired as exc:
        return {"rc": None, "stdout": exc.stdout or "", "stderr": f"timed out after {exc.timeout:.0f}s",
                "s": round(time.monotonic() - t, 2)}
    except OSError as exc:
        return {"rc": None, "stdout": "", "stderr": str(exc), "s": 0.0}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_try(nvml: Any, name: str, *args: Any) -> tuple[Any, str | None]:
    """(value, None) or (None, why): a missing function or an NVMLError is an answer, not a crash."""
    fn = getattr(nvml, name, None)
    if fn is None:
        return None, "not in this NVML module"
    try:
        return fn(*args), None
    except nvml.NVMLError as exc:
        return None, f"{type(exc).__name__}: {exc}"


def instant_power_w(nvml: Any, handle: Any) -> tuple[float | None, str | None]:
    """NVML_FI_DEV_POWER_INSTANT (mW) through nvmlDeviceGetFieldValues, where the module and GPU have it."""
    field = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
    vals, why = nvml_try(nvml, "nvmlDeviceGetFieldValues", handle, [field]) if field is not None else (None, "no field id")
    if vals is None:
        return None, why
    v = vals[0]
    if v.nvmlReturn != 0:
        return None, f"field returned NVML error {v.nvmlReturn}"
    kind = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}.get(v.valueType, "uiVal")
    return float(getattr(v.value, kind)) / 1000.0, None


def trapezoid(samples: list[tuple[float, float]]) -> float:
    return math.fsum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(samples))


def median_us(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


# --- the workload -------------------------------------------------------------------------------------------


def workload_mode(ctx: Ctx) -> tuple[str, str]:
    """(mode, why) of the load this machine can make."""
    if ctx.sim:
        return "cpu", "simulate mode: simulated GPUs, CPU-only workload"
    if ctx.torch_cuda:
        return "torch", "torch bf16 matmul loop on cuda:0"
    if ctx.cudactx_ok:
        return "cudactx", "no torch CUDA: a bare CUDA context through libcuda (process listed by NVML, GPU idle)"
    return "cpu", "no torch CUDA and no libcuda: CPU-only workload, the GPU stays idle"


def workload_argv(mode: str, seconds: float, ready: Path, stop: Path) -> list[str]:
    return [sys.executable, "-c", WORKLOAD, mode, str(seconds), str(ready), str(stop)]


def wait_ready(ctx: Ctx, proc: subprocess.Popen, ready: Path, timeout_s: float) -> dict[str, Any] | None:
    def done() -> Any:
        if ready.exists():
            return json.loads(ready.read_text())
        return {"exited": proc.returncode} if proc.poll() is not None else None

    info = wait_for(done, ctx.timeout(timeout_s), 0.05)
    return None if not info or "exited" in info else info


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group a child leads, and reap it (5 s at most)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def stop_proc(proc: subprocess.Popen, timeout_s: float = 30.0) -> int | None:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return None


# --- step 0: environment ------------------------------------------------------------------------------------


def step_env(step: Step, ctx: Ctx) -> None:
    from importlib import metadata

    versions = {}
    for dist in ("nvidia-ml-py", "pynvml", "psutil", "APScheduler", "torch", "carbond"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    step.data.update({"python": sys.version, "executable": sys.executable, "platform": platform.platform(),
                      "cpus": os.cpu_count(), "packages": versions, "repo": str(REPO)})
    try:
        import carbond
        import carbond.daemon  # the daemon's dependencies (APScheduler, psutil)

        step.check("carbond_importable", True, f"carbond {carbond.__version__} from {Path(carbond.__file__).parent}")
    except Exception as exc:
        step.check("carbond_importable", False, f"{type(exc).__name__}: {exc}")
    try:
        import pynvml

        step.check("pynvml_importable", True, f"pynvml from {pynvml.__file__}")
    except Exception as exc:
        step.check("pynvml_importable", False, f"{type(exc).__name__}: {exc} (carbond depends on nvidia-ml-py)")
    probe = ("import json, torch\nd = {'torch': torch.__version__, 'cuda_build': torch.version.cuda, "
             "'cuda_available': torch.cuda.is_available()}\nif d['cuda_available']:\n"
             "    d['device_count'] = torch.cuda.device_count(); d['device'] = torch.cuda.get_device_name(0)\n"
             "print(json.dumps(d))")
    r = run_cmd(ctx, [sys.executable, "-c", probe], 90, env={**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    torch_info: dict[str, Any] = {"rc": r["rc"], "seconds": r["s"]}
    if r["rc"] == 0:
        torch_info.update(json.loads(r["stdout"].strip().splitlines()[-1]))
    else:
        torch_info["error"] = r["stderr"].strip().splitlines()[-1:] or ["no output"]
    step.data["torch"] = torch_info
    ctx.torch_cuda = bool(torch_info.get("cuda_available")) and not ctx.sim
    if ctx.sim:
        step.check("torch_cuda", None, reason=f"simulate mode (torch here: {torch_info.get('torch', 'not installed')}, "
                   f"cuda {torch_info.get('cuda_available')})")
    elif torch_info.get("cuda_available"):
        step.check("torch_cuda", True, f"torch {torch_info['torch']} (CUDA {torch_info['cuda_build']}) sees "
                   f"{torch_info.get('device_count')} GPU(s): {torch_info.get('device')}")
    else:
        why = (f"torch {torch_info['torch']} without CUDA (build {torch_info.get('cuda_build')})" if "torch" in torch_info
               else f"torch not usable: {torch_info.get('error')}")
        step.check("torch_cuda", None, reason=f"{why}; loads fall back to a bare CUDA context or an idle GPU")
    # libcuda: lets the fallback workload open a context without torch
    if not ctx.sim:
        r = run_cmd(ctx, [sys.executable, "-c", "import ctypes; c = ctypes.CDLL('libcuda.so.1'); print(c.cuInit(0))"], 30)
        ctx.cudactx_ok = r["rc"] == 0 and r["stdout"].strip() == "0"
        step.data["libcuda"] = {"cuInit": r["stdout"].strip() or None, "error": r["stderr"].strip()[-300:] or None}
        smi = shutil.which("nvidia-smi")
        if smi:
            r = run_cmd(ctx, [smi, "--query-gpu=index,name,driver_version,power.draw,power.limit,mig.mode.current",
                              "--format=csv,noheader"], 20)
            step.data["nvidia_smi"] = (r["stdout"] or r["stderr"]).strip()
    mode, why = workload_mode(ctx)
    step.data["workload"] = {"mode": mode, "why": why}
    step.summary = (f"python {sys.version.split()[0]}, nvidia-ml-py {versions['nvidia-ml-py']}, "
                    f"torch {torch_info.get('torch')} cuda={torch_info.get('cuda_available')}; workload: {mode}")


# --- step 1: inventory --------------------------------------------------------------------------------------


def arch_name(nvml: Any, arch: int | None) -> str | None:
    if arch is None:
        return None
    for name in dir(nvml):
        if name.startswith("NVML_DEVICE_ARCH_") and getattr(nvml, name) == arch:
            return name.removeprefix("NVML_DEVICE_ARCH_").lower()
    return str(arch)


def step_inventory(step: Step, ctx: Ctx) -> None:
    try:
        nvml = ctx.nvml()
    except Exception as exc:
        step.check("nvml_init", False, f"{type(exc).__name__}: {exc}")
        raise NotApplicableError("NVML could not be initialised") from exc
    step.check("nvml_init", True, "simulated NVML" if ctx.sim else f"pynvml {getattr(nvml, '__file__', '')}")
    system = {}
    for key, fn in (("driver", "nvmlSystemGetDriverVersion"), ("nvml", "nvmlSystemGetNVMLVersion"),
                    ("cuda_driver", "nvmlSystemGetCudaDriverVersion_v2")):
        value, why = nvml_try(nvml, fn)
        system[key] = text(value) if value is not None else f"n/a ({why})"
    count = nvml.nvmlDeviceGetCount()
    step.data["system"] = {**system, "gpu_count": count}
    step.check("gpu_present", count > ctx.gpu, f"{count} GPU(s); validating gpu{ctx.gpu}")
    gpus = []
    for i in range(count):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        g: dict[str, Any] = {"index": i}
        for key, fn in (("name", "nvmlDeviceGetName"), ("uuid", "nvmlDeviceGetUUID")):
            value, why = nvml_try(nvml, fn, h)
            g[key] = text(value) if value is not None else f"n/a ({why})"
        pci, _ = nvml_try(nvml, "nvmlDeviceGetPciInfo", h)
        g["pci_bus_id"] = text(pci.busId) if pci is not None else None
        arch, why = nvml_try(nvml, "nvmlDeviceGetArchitecture", h)
        g["architecture"] = {"value": arch, "name": arch_name(nvml, arch), "error": why}
        for key, fn in (("enforced_limit_w", "nvmlDeviceGetEnforcedPowerLimit"),
                        ("management_limit_w", "nvmlDeviceGetPowerManagementLimit"),
                        ("default_limit_w", "nvmlDeviceGetPowerManagementDefaultLimit"),
                        ("power_usage_w", "nvmlDeviceGetPowerUsage")):
            value, why = nvml_try(nvml, fn, h)
            g[key] = value / 1000.0 if value is not None else f"n/a ({why})"
        lim, why = nvml_try(nvml, "nvmlDeviceGetPowerManagementLimitConstraints", h)
        g["limit_constraints_w"] = [v / 1000.0 for v in lim] if lim is not None else f"n/a ({why})"
        energy, why = nvml_try(nvml, "nvmlDeviceGetTotalEnergyConsumption", h)
        g["energy_counter"] = {"supported": energy is not None, "mj": energy, "error": why}
        inst, why = instant_power_w(nvml, h)
        g["instant_power"] = {"supported": inst is not None, "w": inst, "error": why}
        mig, why = nvml_try(nvml, "nvmlDeviceGetMigMode", h)
        g["mig_mode"] = list(mig) if mig is not None else f"n/a ({why})"
        mem, why = nvml_try(nvml, "nvmlDeviceGetMemoryInfo", h)
        g["memory_total_bytes"] = getattr(mem, "total", None)
        gpus.append(g)
    step.data["gpus"] = gpus
    if count <= ctx.gpu:
        raise NotApplicableError(f"no gpu{ctx.gpu}")
    g = gpus[ctx.gpu]
    has_counter = g["energy_counter"]["supported"]
    step.check("energy_counter_supported", has_counter,
               f"nvmlDeviceGetTotalEnergyConsumption = {g['energy_counter']['mj']} mJ" if has_counter
               else f"not supported: {g['energy_counter']['error']}")
    # what carbond itself decides, in-process and through the CLI
    from carbond.sensors.gpu import NvmlGpus

    expected = "simulated" if ctx.sim else "counter" if has_counter else "power"
    gpus_c = NvmlGpus(nvml, simulated=bool(ctx.sim))
    try:
        infos = [vars(d) for d in gpus_c.devices()]
    finally:
        gpus_c.close()
    step.data["carbond_devices_inprocess"] = infos
    argv = [sys.executable, "-m", "carbond", "devices", "--json"] + (["--simulate-gpus", str(ctx.sim)] if ctx.sim else [])
    r = run_cmd(ctx, argv, 60, env=ctx.env())
    step.data["carbond_devices_cli"] = {"argv": argv[1:], "rc": r["rc"], "stderr": r["stderr"][-1500:]}
    try:
        doc = json.loads(r["stdout"])
    except ValueError:
        doc = None
    step.data["carbond_devices_cli"]["doc"] = doc
    row = next((d for d in (doc or {}).get("devices", []) if d["device"] == f"gpu{ctx.gpu}"), None)
    step.check("carbond_devices", r["rc"] == 0 and row is not None and row["source"] == expected,
               f"rc {r['rc']}; gpu{ctx.gpu}: " + (f"source {row['source']} (expected {expected}), {row['detail']}" if row
                                                  else f"missing; stderr: {r['stderr'][-300:]}"))
    limit = g["enforced_limit_w"]
    step.summary = (f"driver {system['driver']}; gpu{ctx.gpu} {g['name']} ({g['architecture']['name']}) {g['uuid']}; "
                    f"power limit {limit} W; energy counter {'yes' if has_counter else 'no'}; "
                    f"instant power field {'yes' if g['instant_power']['supported'] else 'no'}; "
                    f"carbond devices: {row['source'] if row else 'n/a'}")


# --- step 2: energy counter vs sampled power ----------------------------------------------------------------


class TimedNvml:
    """The NVML module with every ``nvml*`` call timed (wall µs), per function name."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self.calls: dict[str, list[float]] = defaultdict(list)
        self._wrapped: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._nvml, name)
        if not (name.startswith("nvml") and callable(value)):
            return value
        if name not in self._wrapped:
            calls = self.calls[name]

            def timed(*args: Any, _fn: Any = value, _calls: list[float] = calls) -> Any:
                t = time.perf_counter_ns()
                try:
                    return _fn(*args)
                finally:
                    _calls.append((time.perf_counter_ns() - t) / 1000.0)

            self._wrapped[name] = timed
        return self._wrapped[name]


def step_counter_vs_power(step: Step, ctx: Ctx) -> None:
    from carbond.sampler import Sampler
    from carbond.sensors.gpu import NvmlGpus

    nvml = ctx.nvml()
    h = nvml.nvmlDeviceGetHandleByIndex(ctx.gpu)
    if nvml_try(nvml, "nvmlDeviceGetTotalEnergyConsumption", h)[0] is None:
        raise NotApplicableError(f"gpu{ctx.gpu} has no energy counter")
    mode, why = workload_mode(ctx)
    load = None
    load_kind = ("simulated trace (SimulatedNvml sine load; no real load needed)" if ctx.sim
                 else "idle window (no GPU load possible)")
    window_s = ctx.args.load_s
    if mode == "torch":
        ready, stop = ctx.tmp / "load.ready", ctx.tmp / "load.stop"
        with open(ctx.tmp / "load.stderr", "w") as err:  # the child keeps its own copy
            load = ctx.popen(workload_argv("torch", window_s + 30, ready, stop), stderr=err, env=ctx.env(), cwd=REPO)
        info = wait_ready(ctx, load, ready, 120)
        if info is None:
            stop_proc(load, 1)
            step.check("load_started", False, "torch load did not start: "
                       + (ctx.tmp / "load.stderr").read_text()[-500:].strip())
            load, load_kind = None, "idle window (the torch load failed to start)"
        else:
            step.check("load_started", True, f"torch matmul on {info.get('device')}, pid {info['pid']}")
            load_kind = "torch bf16 matmul loop"
    elif not ctx.sim:
        step.check("load_started", None, reason=f"no torch CUDA: {why}; measuring an idle window")
    if window_s + 10 > ctx.left():
        window_s = max(2.0, ctx.left() - 10)
    timed = TimedNvml(nvml)
    gpus = NvmlGpus(timed, simulated=bool(ctx.sim))
    sampler = Sampler()
    device = f"gpu{ctx.gpu}"
    carbond_j: list[float] = []
    methods: Counter[str] = Counter()

    def carbond_read() -> None:
        for e in sampler.step(gpus.read()):
            if e.device == device:
                carbond_j.append(e.energy_j)
                methods[e.method] += 1
        gpus.processes()

    inst_ok = instant_power_w(nvml, h)[0] is not None
    power: list[tuple[float, float]] = []
    instant: list[tuple[float, float]] = []
    util: list[float] = []

    def sample() -> None:
        t = time.monotonic()
        power.append((t, nvml.nvmlDeviceGetPowerUsage(h) / 1000.0))
        if inst_ok:
            w, _ = instant_power_w(nvml, h)
            if w is not None:
                instant.append((time.monotonic(), w))

    try:
        t_c0 = time.monotonic()
        c0 = nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        carbond_read()
        sample()
        t_end = t_c0 + window_s
        next_read = t_c0 + 1.0
        next_sample = t_c0 + SAMPLE_PERIOD_S
        while True:
            now = time.monotonic()
            if now >= t_end:
                break
            if now >= next_read:
                carbond_read()
                rates, _ = nvml_try(nvml, "nvmlDeviceGetUtilizationRates", h)
                if rates is not None:
                    util.append(float(rates.gpu))
                next_read += 1.0
            if time.monotonic() >= next_sample:
                sample()
                next_sample += SAMPLE_PERIOD_S
            time.sleep(max(0.0, min(next_sample, next_read, t_end) - time.monotonic()))
        sample()
        c1 = nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        t_c1 = time.monotonic()
        carbond_read()
    finally:
        if load is not None:
            (ctx.tmp / "load.stop").write_text("stop")
            step.data["load_exit"] = stop_proc(load, 30)
        gpus.close()
    if load is not None:
        step.check("load_ran_through", step.data["load_exit"] == 0, f"torch load exit code {step.data['load_exit']} "
                   "after the window" + ("" if step.data["load_exit"] == 0 else ": "
                                         + (ctx.tmp / "load.stderr").read_text()[-400:].strip()))
    counter_j = (c1 - c0) / 1000.0
    power_j = trapezoid(power)
    instant_j = trapezoid(instant) if len(instant) > 1 else None
    c_j = math.fsum(carbond_j)
    changes = sum(1 for (_, a), (_, b) in itertools.pairwise(power) if a != b)
    span = power[-1][0] - power[0][0]
    step.data.update({
        "load": load_kind, "window_s": round(t_c1 - t_c0, 3), "power_span_s": round(span, 3), "power_samples": len(power),
        "power_value_changes": changes, "power_update_period_s": round(span / changes, 3) if changes else None,
        "counter_j": round(counter_j, 3), "power_integral_j": round(power_j, 3),
        "ratio_power_over_counter": round(power_j / counter_j, 5) if counter_j > 0 else None,
        "instant_integral_j": None if instant_j is None else round(instant_j, 3),
        "ratio_instant_over_counter": round(instant_j / counter_j, 5) if instant_j and counter_j > 0 else None,
        "carbond_j": round(c_j, 3), "carbond_reads": len(carbond_j) + 1, "carbond_methods": dict(methods),
        "ratio_carbond_over_counter": round(c_j / counter_j, 5) if counter_j > 0 else None,
        "mean_power_w": round(counter_j / (t_c1 - t_c0), 2), "utilization_pct": util,
        "nvml_call_us": {k: {"n": len(v), "median": median_us(v)} for k, v in sorted(timed.calls.items())},
    })
    with open(ctx.report.out / "power_samples.csv", "w") as fh:
        fh.write("t_s,power_w\n" + "".join(f"{t - t_c0:.4f},{w:.3f}\n" for t, w in power))
    step.check("counter_advances", counter_j > 0, f"{counter_j:.1f} J over {t_c1 - t_c0:.1f} s")
    if counter_j > 0:
        ratio = power_j / counter_j
        under_load = load is not None or ctx.sim
        step.check("counter_vs_power", abs(ratio - 1) <= POWER_TOLERANCE,
                   f"counter {counter_j:.1f} J, ∫power {power_j:.1f} J ({len(power)} samples, value changed every "
                   f"{step.data['power_update_period_s']} s), ratio {ratio:.4f}, tolerance {POWER_TOLERANCE:.0%}"
                   + ("" if under_load else "; IDLE window, weaker evidence"))
        cr = c_j / counter_j
        step.check("carbond_vs_counter", abs(cr - 1) <= CARBOND_TOLERANCE,
                   f"NvmlGpus.read() at 1 s: {c_j:.1f} J by {dict(methods)}, ratio {cr:.4f}")
    step.summary = (f"{load_kind}, {t_c1 - t_c0:.1f} s, mean {step.data['mean_power_w']} W: counter {counter_j:.1f} J, "
                    f"∫power {power_j:.1f} J (ratio {step.data['ratio_power_over_counter']}), carbond {c_j:.1f} J"
                    + (f", ∫instant {instant_j:.1f} J" if instant_j else ""))


# --- step 4: per-tick NVML cost -----------------------------------------------------------------------------


def step_tick_cost(step: Step, ctx: Ctx) -> None:
    from carbond.sensors.gpu import NvmlGpus

    nvml = ctx.nvml()
    timed = TimedNvml(nvml)
    gpus = NvmlGpus(timed, simulated=bool(ctx.sim))
    probe_calls = {k: len(v) for k, v in timed.calls.items()}
    wall: list[float] = []
    cpu: list[float] = []
    read_wall: list[float] = []
    ticks = ctx.args.ticks
    try:
        gpus.read()  # the first read also reads memory and temperature (every 10 s after)
        for v in timed.calls.values():  # in place: the timed wrappers hold these lists
            v.clear()
        for _ in range(ticks):
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            gpus.read()
            w1 = time.perf_counter_ns()
            gpus.processes()  # asked on every tick while runs are active
            wall.append((time.perf_counter_ns() - w0) / 1000.0)
            cpu.append((time.thread_time_ns() - c0) / 1000.0)
            read_wall.append((w1 - w0) / 1000.0)
            time.sleep(0.01)
        per_call = {k: {"per_tick": round(len(v) / ticks, 2), "median_us": median_us(v),
                        "p90_us": round(statistics.quantiles(v, n=10)[-1], 1) if len(v) >= 10 else None}
                    for k, v in sorted(timed.calls.items()) if v}
    finally:
        gpus.close()
    n_gpus = len(gpus.devices())
    cpu_med = statistics.median(cpu)
    step.data.update({
        "ticks": ticks, "gpus": n_gpus, "probe_calls": probe_calls, "per_call": per_call,
        "tick_wall_us": {"median": median_us(wall), "p90": round(statistics.quantiles(wall, n=10)[-1], 1)},
        "tick_cpu_us": {"median": median_us(cpu), "p90": round(statistics.quantiles(cpu, n=10)[-1], 1)},
        "read_only_wall_us": {"median": median_us(read_wall)},
        "cpu_target_us": TICK_CPU_TARGET_US, "within_issue2_budget": cpu_med <= TICK_CPU_TARGET_US,
        "note": "read() + processes() for every GPU, as a tick with active runs makes them; memory and temperature "
                "are read every 10 s only; within_issue2_budget compares the NVML part alone with the whole-tick target",
    })
    step.check("measured", bool(wall), f"{ticks} ticks × {n_gpus} GPU(s)")
    calls = ", ".join(f"{k.removeprefix('nvmlDevice')} {v['median_us']}µs×{v['per_tick']}" for k, v in per_call.items())
    step.summary = (f"NVML per tick ({n_gpus} GPU): median {median_us(wall)} µs wall, {median_us(cpu)} µs CPU "
                    f"({'within' if cpu_med <= TICK_CPU_TARGET_US else 'OVER'} the 500 µs tick target); {calls}")


# --- step 3: a real daemon ----------------------------------------------------------------------------------


def export(ctx: Ctx, env: dict[str, str], store: str, measurement: str) -> tuple[list[dict[str, Any]], str | None]:
    path = ctx.tmp / f"{measurement}.jsonl"
    r = run_cmd(ctx, [sys.executable, "-m", "carbond", "export", "--store", store, "--measurement", measurement,
                      "--format", "jsonl", "--out", str(path)], 60, env=env, floor=10)
    if r["rc"] != 0:
        return [], f"export {measurement}: rc {r['rc']}: {r['stderr'][-300:]}"
    lines = path.read_text().splitlines() if path.exists() else []
    try:
        shutil.copy(path, ctx.report.out / f"daemon_{measurement}.jsonl")
    except OSError:
        pass
    return [json.loads(line) for line in lines if line.strip()], None


def step_daemon(step: Step, ctx: Ctx) -> None:
    from carbond import ipc
    from carbond.errors import DaemonUnavailableError

    env = ctx.env()
    d = ctx.tmp / "daemon"
    d.mkdir(exist_ok=True)
    sock, store = str(d / "c.sock"), f"sqlite://{d / 'c.db'}"
    argv = [sys.executable, "-m", "carbond", "run", "--store", store, "--interval", "1", "--socket", sock]
    if ctx.sim:
        argv += ["--simulate-gpus", str(ctx.sim)]
    mode, why = workload_mode(ctx)
    step.data.update({"daemon_argv": argv[1:], "workload": {"mode": mode, "why": why}, "env_nvml": env["CARBOND_SENSORS_NVML"]})
    log_path = ctx.report.out / "daemon.log"
    log = open(log_path, "w")  # closed in finally

    def status() -> dict[str, Any] | None:
        try:
            return ipc.request(sock, "status", timeout_s=5)
        except (DaemonUnavailableError, OSError, ValueError):
            return None

    daemon = ctx.popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    track = None
    seen: dict[str, Any] = {"daemon_pids": [], "nvml_pids": [], "run": None}
    try:
        first = wait_for(lambda: (s := status()) and s["stats"]["ticks"] >= 2 and s, ctx.timeout(60), 0.2)
        if not first:
            step.check("daemon_started", False, f"no status with 2 ticks within 60 s (exit {daemon.poll()}); log: "
                       + log_path.read_text()[-600:])
            raise NotApplicableError("the daemon did not start")
        step.check("daemon_started", True, f"pid {first['pid']}, {first['stats']['ticks']} ticks")
        step.data["status_devices"] = [{k: v for k, v in dev.items() if k in ("device", "source", "power_w", "model")}
                                       for dev in (first.get("last_tick") or {}).get("devices", [])]
        ready, stop = d / "work.ready", d / "work.stop"
        track_argv = [sys.executable, "-m", "carbond", "track", "--job", JOB, "--project", JOB, "--phase", "validation",
                      "--socket", sock, "--", *workload_argv(mode, ctx.args.track_s, ready, stop)]
        with open(d / "track.stderr", "w") as terr:  # the child keeps its own copy
            track = ctx.popen(track_argv, stdout=terr, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        info = wait_ready(ctx, track, ready, 120)
        if info is None:
            step.check("workload_started", False, "workload did not start: " + (d / "track.stderr").read_text()[-600:])
        else:
            pid = info["pid"]
            step.data["workload_info"] = info
            step.check("workload_started", True, f"{mode} workload pid {pid} (NSpid {info.get('nspid')})")
            nvml = handle = None
            if not ctx.sim:
                try:
                    nvml = ctx.nvml()
                    handle = nvml.nvmlDeviceGetHandleByIndex(ctx.gpu)
                except Exception as exc:  # recorded; the daemon's own view still counts
                    step.data["nvml_error"] = f"{type(exc).__name__}: {exc}"

            def observe() -> bool:
                s = status() or {}
                run = next((r for r in s.get("runs", []) if r["job"] == JOB), None)
                if run:
                    seen["run"] = run["run"]
                    seen["daemon_pids"] = run["pids"]
                if handle is not None:
                    procs, _ = nvml_try(nvml, "nvmlDeviceGetComputeRunningProcesses", handle)
                    seen["nvml_pids"] = sorted({int(p.pid) for p in procs or []} | set(seen["nvml_pids"]))
                daemon_ok = pid in seen["daemon_pids"]
                nvml_ok = handle is None or pid in seen["nvml_pids"] or mode == "cpu"
                return (daemon_ok and nvml_ok) or track.poll() is not None

            wait_for(observe, ctx.timeout(ctx.args.track_s + 30), 0.5)
        rc = stop_proc(track, ctx.timeout(ctx.args.track_s + 60, floor=10))
        step.check("track_exit", rc == 0, f"carbond track exited {rc}" + ("" if rc == 0 else ": "
                                                                        + (d / "track.stderr").read_text()[-400:]))
        wait_for(lambda: (s := status()) is not None and not [r for r in s.get("runs", []) if r["job"] == JOB],
                 ctx.timeout(30), 0.2)
        last = status()
        if last:  # two more ticks, so the run's last interval is in the store
            wait_for(lambda: (s := status()) and s["stats"]["ticks"] >= last["stats"]["ticks"] + 2, ctx.timeout(10), 0.2)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        daemon_rc = stop_proc(daemon, ctx.timeout(60, floor=15))
        log.close()
        if track is not None and track.poll() is None:
            stop_proc(track, 1)
    step.check("daemon_sigterm_exit", daemon_rc == 0, f"exit code {daemon_rc} after SIGTERM")
    step.data["seen"] = seen
    points: dict[str, list[dict[str, Any]]] = {}
    for m in ("device", "host", "job", "run", "carbond"):
        points[m], err = export(ctx, env, store, m)
        if err:
            step.check(f"export_{m}", False, err)
    step.data["points"] = {m: len(v) for m, v in points.items()}
    device = f"gpu{ctx.gpu}"
    expected = "simulated" if ctx.sim else "counter"
    gpu_pts = [p for p in points["device"] if p["tags"]["device"] == device]
    sources = Counter(p["tags"]["source"] for p in gpu_pts)
    step.data["gpu_sources"] = dict(sources)
    hint = "" if gpu_pts else "; daemon log: " + " | ".join(
        line[-200:] for line in log_path.read_text().splitlines() if "NVML" in line or "GPU" in line)[:600]
    step.check("gpu_source", bool(gpu_pts) and set(sources) == {expected},
               f"{device}: {len(gpu_pts)} points, sources {dict(sources)} (expected all {expected}){hint}")
    # host energy = Σ devices, and conservation (Σ runs + unattributed = host), on every tick
    dev_sum: dict[int, float] = defaultdict(float)
    for p in points["device"]:
        dev_sum[p["time_ns"]] += p["fields"]["energy_j"]
    job_sum: dict[int, float] = defaultdict(float)
    for p in points["job"]:
        job_sum[p["time_ns"]] += p["fields"]["energy_j"]
    worst_sum = worst_cons = 0.0
    for p in points["host"]:
        e = p["fields"]["energy_j"]
        worst_sum = max(worst_sum, abs(dev_sum.get(p["time_ns"], 0.0) - e))
        worst_cons = max(worst_cons, abs(job_sum.get(p["time_ns"], 0.0) + p["fields"]["unattributed_j"] - e))
    n_host = len(points["host"])
    tol = 1e-6
    step.check("host_equals_sum_of_devices", n_host > 0 and worst_sum <= tol,
               f"{n_host} ticks, largest |Σ devices − host| {worst_sum:.3g} J")
    step.check("conservation", n_host > 0 and worst_cons <= tol,
               f"{n_host} ticks, largest |Σ runs + unattributed − host| {worst_cons:.3g} J")
    # the run
    finals = [p for p in points["run"] if p["tags"]["job"] == JOB and p["tags"]["status"] == "finished"]
    final = finals[-1]["fields"] if finals else None
    step.data["run_final"] = final
    step.check("run_finished", bool(final) and final["energy_j"] > 0,
               f"run {seen['run']}: " + (f"{final['energy_j']:.1f} J over {final['duration_s']:.1f} s, by source "
                                         f"{ {k: round(v, 1) for k, v in final.items() if k.startswith('source_')} }"
                                         if final else "no finished run point"))
    jobs = [p for p in points["job"] if p["tags"]["job"] == JOB]
    run_gpu_j = math.fsum(p["fields"].get("gpu_energy_j", 0.0) for p in jobs)
    run_ticks = {p["time_ns"] for p in jobs}
    gpu_j_in_run = math.fsum(p["fields"]["energy_j"] for p in gpu_pts if p["time_ns"] in run_ticks)
    step.data.update({"run_gpu_energy_j": run_gpu_j, "gpu_energy_during_run_j": gpu_j_in_run,
                      "run_ticks": len(run_ticks)})
    wpid = (step.data.get("workload_info") or {}).get("pid")
    step.check("pid_seen_by_daemon", wpid is not None and wpid in seen["daemon_pids"],
               f"workload pid {wpid}; the run's pids in status: {seen['daemon_pids']}")
    if ctx.sim:
        step.check("pid_listed_by_nvml", None, reason="simulate mode: simulated GPUs list no processes")
        step.check("gpu_share", None, reason="simulate mode: no process runs on a simulated GPU, so no GPU share "
                   f"(run got {run_gpu_j:.1f} J of GPU energy)")
    elif mode == "cpu":
        step.check("pid_listed_by_nvml", None, reason=why)
        step.check("gpu_share", None, reason=why)
    else:
        nspid = (step.data.get("workload_info") or {}).get("nspid") or []
        listed = wpid in seen["nvml_pids"]
        step.check("pid_listed_by_nvml", listed,
                   f"workload pid {wpid} (NSpid {nspid}); NVML compute processes on {device}: {seen['nvml_pids']}"
                   + ("" if listed or not seen["nvml_pids"] else " — NVML gives host pids: is this a container (PID "
                      "namespace)? carbond's owner() compares them with its own namespace's pids"))
        frac = run_gpu_j / gpu_j_in_run if gpu_j_in_run > 0 else 0.0
        step.check("gpu_share", run_gpu_j > 0, f"run {seen['run']} got {run_gpu_j:.1f} J of {device}'s "
                   f"{gpu_j_in_run:.1f} J on its {len(run_ticks)} ticks ({frac:.0%}; exclusive use should be ~100%)")
    selfp = sorted(points["carbond"], key=lambda p: p["time_ns"])
    if len(selfp) >= 2:
        dt_s = (selfp[-1]["time_ns"] - selfp[0]["time_ns"]) / 1e9
        dcpu = selfp[-1]["fields"]["cpu_s"] - selfp[0]["fields"]["cpu_s"]
        step.data["daemon_cpu_per_s_ms"] = round(dcpu / dt_s * 1000, 2) if dt_s > 0 else None
    step.summary = (f"{n_host} ticks; {device} sources {dict(sources)}; run GPU share {run_gpu_j:.1f} J of "
                    f"{gpu_j_in_run:.1f} J; host=Σdevices max diff {worst_sum:.2g} J; daemon exit {daemon_rc}")


# --- main ---------------------------------------------------------------------------------------------------


STEPS: list[tuple[str, Callable[[Step, Ctx], None], float]] = [
    ("env", step_env, 5),
    ("inventory", step_inventory, 5),
    ("counter_vs_power", step_counter_vs_power, 15),
    ("tick_cost", step_tick_cost, 5),
    ("daemon", step_daemon, 40),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT"), help="results directory (default: $OUT)")
    p.add_argument("--simulate", type=int, default=0, metavar="N", help="use N simulated GPUs instead of pynvml")
    p.add_argument("--gpu", type=int, default=0, metavar="I", help="NVML index of the GPU to validate (default 0)")
    p.add_argument("--load-s", type=float, help="counter-vs-power window (default 20, simulate 4)")
    p.add_argument("--track-s", type=float, help="tracked workload length (default 15, simulate 3)")
    p.add_argument("--ticks", type=int, default=200, help="ticks timed in tick_cost (default 200)")
    p.add_argument("--budget-s", type=float, default=200,
                   help="time for the steps (default 200); a watchdog ends the run 25 s after it")
    p.add_argument("--only", help="comma-separated steps to run (default: all)")
    args = p.parse_args(argv)
    if not args.out:
        p.error("--out is required when $OUT is not set")
    if args.simulate < 0 or args.gpu < 0 or args.ticks < 10:
        p.error("--simulate and --gpu must be ≥ 0, --ticks ≥ 10")
    args.load_s = args.load_s or (4.0 if args.simulate else 20.0)
    args.track_s = args.track_s or (3.0 if args.simulate else 15.0)
    names = [n for n, _, _ in STEPS]
    args.only = args.only.split(",") if args.only else names
    if unknown := [n for n in args.only if n not in names]:
        p.error(f"--only: unknown step(s) {unknown}; valid: {', '.join(names)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, f"simulate {args.simulate}" if args.simulate else "real", argv)
    ctx = Ctx(args, report)
    report.doc["tmp"] = str(ctx.tmp)

    def abort(why: str, code: int) -> None:
        """Keep what was measured: mark the running step, write the results, end the children, exit."""
        report.doc["aborted"] = why
        for s in report.steps:
            if s.status is None:
                s.status, s.reason = FAIL, f"still running when the run was aborted ({why})"
        report.write()
        ctx.cleanup()
        print(summary_text(json.loads((out / "results.json").read_text())), flush=True)
        os._exit(code)

    signal.signal(signal.SIGTERM, lambda signum, frame: abort("SIGTERM", 143))
    dog = threading.Timer(args.budget_s + 25, abort, (f"watchdog: over the {args.budget_s:.0f} s budget by 25 s; a call hung", 3))
    dog.daemon = True
    dog.start()
    try:
        for name, fn, need_s in STEPS:
            step = Step(name)
            report.steps.append(step)
            t = time.monotonic()
            if name not in args.only:
                step.status, step.reason = SKIPPED, "not selected (--only)"
            elif ctx.left() < need_s:
                step.status, step.reason = SKIPPED, f"time budget: {max(ctx.left(), 0):.0f} s left, needs ~{need_s:.0f} s"
            else:
                try:
                    fn(step, ctx)
                except NotApplicableError as exc:
                    step.reason = str(exc)
                    if not any(c["status"] == FAIL for c in step.checks):
                        step.status = SKIPPED
                except Exception as exc:
                    step.status, step.reason = FAIL, f"{type(exc).__name__}: {exc}"
                    step.data["traceback"] = traceback.format_exc()[-3000:]
            step.duration_s = time.monotonic() - t
            step.finish()
            report.write()
            print(f"[{step.status}] {name} ({step.duration_s:.1f} s) {step.summary}", file=sys.stderr, flush=True)
    finally:
        ctx.cleanup()
        dog.cancel()
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    report.doc["complete"] = True
    report.write()
    doc = json.loads((out / "results.json").read_text())
    print(summary_text(doc), end="")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
