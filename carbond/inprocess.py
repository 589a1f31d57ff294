"""Measure a run from inside its own process when no daemon answers.

The same pieces as the daemon, on one background thread: the sensors of
:func:`carbond.sensors.build_sensors`, the :class:`~carbond.sampler.Sampler` for joules per
device, and :func:`carbond.attribution.attribute` for this process tree's share:

- CPU by the tree's CPU time (``utime+stime+cutime+cstime`` of this process and its live
  descendants, from ``/proc``) over the host's busy CPU time (``/proc/stat``);
- RAM by the tree's resident memory over the memory in use;
- a GPU wholly when every NVML process on it belongs to the tree, split by SM utilization
  (else memory) when it is shared, not at all when none of its processes is ours.

The rest of the machine's energy stays unattributed (not written: the daemon's ``host``
points cover the machine). Each tick yields one ``job`` point; at the end the ``job``
points and one ``run`` point (with ``in_process=1``) go to the embedded store. The thread
blocks the asynchronous signals, so signals keep reaching the main thread.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from carbond.client import RunResult, warn_once
from carbond.store.base import Point, make_point

log = logging.getLogger(__name__)

WRITE_EVERY_S = 30.0  # job points reach the store this often during a long run
JOIN_TIMEOUT_S = 15.0  # the sampler thread's last tick (and a slow NVML start) at stop
HOUR_NS = 3_600_000_000_000
BLOCKED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                   signal.SIGCHLD, signal.SIGALRM, signal.SIGWINCH, signal.SIGPIPE}


def new_run_id(job: str, now_ns: int | None = None) -> str:
    """A run id shaped like the daemon's: ``JOB-YYYYmmddTHHMMSS-xxxxxx``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime((now_ns or time.time_ns()) / 1e9))
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', job)[:40]}-{stamp}-{uuid.uuid4().hex[:6]}"


def embedded_store_url(settings: Any) -> str:
    """The configured store when it is SQLite, else the default SQLite file."""
    from carbond.config import default_store_url

    url = settings.store.url
    return url if url.startswith("sqlite:") else default_store_url()


def run_tags(host: str, job: str, project: str | None, phase: str | None, run_id: str) -> dict[str, str]:
    """The fixed tags of ``job`` and ``run`` points (after the user's tags; ``run`` adds ``status``), with the
    daemon's defaults for a missing project and phase."""
    return {"host": host, "project": project or "default", "job": job, "phase": phase or "development", "run": run_id}


def run_fields(duration_s: float, units: Mapping[str, float], metrics: Mapping[str, float], *,
               energy_j: float | None = None, co2_g: float | None = None, water_l: float | None = None,
               embodied_g: float | None = None, sources: Mapping[str, float] | None = None,
               progress: tuple[float, float] | None = None, exit_code: int | None = None) -> dict[str, float | None]:
    fields: dict[str, float | None] = {
        "duration_s": duration_s, "energy_j": energy_j, "co2_g": co2_g, "water_l": water_l, "embodied_g": embodied_g,
        "in_process": 1.0, "exit_code": None if exit_code is None else float(exit_code),
    }
    for source, joules in (sources or {}).items():
        fields[f"source_{source}_j"] = joules
    fields.update({f"unit_{k}": v for k, v in units.items()})
    fields.update({f"metric_{k}": v for k, v in metrics.items()})
    if progress is not None:
        fields["progress_done"], fields["progress_total"] = progress
    if progress is not None and progress[0] > 0 and energy_j is not None and co2_g is not None:
        scale = progress[1] / progress[0]
        fields["projected_energy_j"] = energy_j * scale
        fields["projected_co2_g"] = co2_g * scale
    return fields


def _write(url: str, points: list[Point]) -> None:
    from carbond.store import open_store

    store = open_store(url)
    try:
        store.write(points)
    finally:
        store.close()


def write_units_only(job: str, project: str | None, phase: str | None, tags: Mapping[str, str], run_id: str,
                     status: str, duration_s: float, units: Mapping[str, float], metrics: Mapping[str, float], *,
                     exit_code: int | None = None) -> RunResult:
    """A ``run`` point with this process's units and metrics only: an ancestor measures the energy."""
    from carbond.config import load_settings

    settings = load_settings().settings
    host = settings.daemon.host
    point = make_point("run", {**tags, **run_tags(host, job, project, phase, run_id), "status": status},
                       run_fields(duration_s, units, metrics, exit_code=exit_code), time.time_ns())
    _write(embedded_store_url(settings), [point])
    return RunResult(run_id, job, status, duration_s, 0.0, 0.0, 0.0, 0.0, "none", project, phase, units=dict(units),
                     metrics=dict(metrics), hosts=(host,), exit_code=exit_code)


class InProcessMeter:
    """Samples the machine on a daemon thread and books this process tree's share to one run."""

    def __init__(self, *, job: str, project: str | None, phase: str | None, tags: Mapping[str, str], run_id: str,
                 root_pid: int | None = None, settings: Any = None, interval_s: float | None = None) -> None:
        self.job, self.project, self.phase, self.tags, self.run_id = job, project, phase, dict(tags), run_id
        self._root_pid = root_pid or os.getpid()
        self._settings = settings
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"carbond-inprocess-{run_id}", daemon=True)
        self._t0 = time.monotonic()
        self._pending: list[Point] = []
        self._pending_lock = threading.Lock()
        self.ticks = 0
        self.energy_j = self.co2_g = self.water_l = self.embodied_g = 0.0
        self.sources: dict[str, float] = {}
        self.host = ""
        self._url = ""

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    # --- the thread -------------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_SIGNALS)
            self._setup()
            self._baseline()
        except Exception as exc:
            self._error = exc
            return
        written_at = time.monotonic()
        while not self._stop.wait(self._interval_s):
            self._safe_tick()
            if time.monotonic() - written_at >= WRITE_EVERY_S:
                self._write_pending()
                written_at = time.monotonic()
        self._safe_tick()  # measure up to the stop
        self._close()

    def _close(self) -> None:
        for thing in (*self._sensors, self._host_cpu, self._stats):
            close = getattr(thing, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    log.debug("in-process: closing %s: %s", type(thing).__name__, exc)

    def _setup(self) -> None:
        from carbond.config import load_settings
        from carbond.factors import resolve_impact_factors
        from carbond.impacts import Embodied
        from carbond.procs import CLK_TCK, HostCpu, Proc
        from carbond.sampler import Sampler
        from carbond.sensors import build_sensors
        from carbond.sensors.procfs import system_stats

        settings = self._settings or load_settings().settings
        self._settings = settings
        self.host = settings.daemon.host
        self._url = embedded_store_url(settings)
        self._interval_s = self._interval_s or settings.daemon.interval_s
        self._policy = settings.attribution.idle_policy
        self._sensors = build_sensors(settings)
        self._sampler = Sampler()
        self._proc, self._host_cpu, self._stats, self._clk_tck = Proc(), HostCpu(), system_stats(), CLK_TCK
        gpu_models = [d.model for s in self._sensors for d in s.devices() if d.kind == "gpu"]
        self._n_gpus = len(gpu_models)
        self._impact = resolve_impact_factors(settings.impacts, settings.region.zone, gpu_models)
        gpu_kg, gpu_years = self._impact.gpus_as_one()
        self._embodied = Embodied(self._impact.host_embodied.embodied_kg, self._impact.host_embodied.lifetime_years,
                                  gpu_kg, gpu_years)
        self._provider = self._make_provider(settings)
        self._nvml = next((getattr(s, "_nvml", None) for s in self._sensors if getattr(s, "_nvml", None)), None)
        self._factors_cache: tuple[int, Any] | None = None
        self._idle_w: dict[str, float] = {}
        self._gpu_seen_us: dict[str, int] = {}

    @staticmethod
    def _make_provider(settings: Any) -> Any:
        from carbond.intensity import ProviderSettings, make_provider

        i = settings.intensity
        return make_provider(ProviderSettings(
            zone=settings.region.zone, intensity_g_per_kwh=settings.region.intensity_g_per_kwh, provider=i.provider,
            provider_zone=i.zone, series_file=i.series_file, series_basis=i.series_basis, api_url=i.api_url,
            token=i.token, emission_factor_type=i.emission_factor_type, marginal=i.marginal,
            marginal_zone=i.marginal_zone, watttime_username=i.watttime_username,
            watttime_password=i.watttime_password, marginal_api_url=i.marginal_api_url, timeout_s=i.timeout_s))

    def _read(self) -> list[Any]:
        readings = []
        for sensor in self._sensors:
            try:
                readings.extend(sensor.read())
            except Exception as exc:  # one failing sensor never stops the others
                log.debug("in-process: %s failed: %s", type(sensor).__name__, exc)
        for r in readings:
            self._idle_w[r.device] = r.idle_w
        return readings

    def _tree(self) -> tuple[set[int], int, int]:
        """This process tree: its pids, CPU ticks (reaped children included) and resident bytes."""
        pids = self._proc.descendants([self._root_pid])
        cpu = rss = 0
        for pid in pids:
            st = self._proc.stat(pid)
            if st is not None:
                cpu += st.cpu_ticks
                rss += st.rss_bytes
        return pids, cpu, rss

    def _baseline(self) -> None:
        self._sampler.step(self._read())
        self._last_mono = time.monotonic()
        self._busy = self._host_cpu.busy_ticks()
        _, self._cpu, _ = self._tree()

    def _factors(self, now_ns: int) -> Any:
        from carbond.impacts import Factors

        hour = now_ns // HOUR_NS
        if self._factors_cache is None or self._factors_cache[0] != hour:
            i = self._provider.intensity_at(datetime.fromtimestamp(now_ns / 1e9, tz=UTC))
            f = self._impact
            self._factors_cache = (hour, Factors(i.intensity_g_per_kwh, f.pue.value, f.wue_site_l_per_kwh.value,
                                                 f.wue_source_l_per_kwh.value, zone=i.zone,
                                                 intensity_source=i.provider, basis=i.basis))
        return self._factors_cache[1]

    def _gpu_use(self, gpu_devices: list[str], pids: set[int]) -> dict[str, Any]:
        from carbond.attribution import GpuUse

        nvml, out = self._nvml, {}
        if nvml is None:
            return out
        for device in gpu_devices:
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(int(device[3:]))
                processes: dict[str | None, int] = {}
                memory: dict[str | None, float] = {}
                for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    key = self.run_id if p.pid in pids else None
                    processes[key] = processes.get(key, 0) + 1
                    memory[key] = memory.get(key, 0.0) + float(getattr(p, "usedGpuMemory", 0) or 0)
                sm: dict[str | None, float] = {}
                try:
                    for s in nvml.nvmlDeviceGetProcessUtilization(handle, self._gpu_seen_us.get(device, 0)):
                        key = self.run_id if s.pid in pids else None
                        sm[key] = sm.get(key, 0.0) + float(s.smUtil)
                        self._gpu_seen_us[device] = max(self._gpu_seen_us.get(device, 0), int(s.timeStamp))
                except Exception:  # NOT_FOUND (no new samples) or unsupported: memory decides
                    pass
                out[device] = GpuUse(sm_pct=sm, memory_bytes=memory, processes=processes)
            except Exception as exc:
                log.debug("in-process: %s processes: %s", device, exc)
        return out

    def _safe_tick(self) -> None:
        try:
            self._tick()
        except Exception as exc:  # one bad tick never ends the measurement
            log.debug("in-process tick failed: %r", exc)

    def _tick(self) -> None:
        from carbond.attribution import Activity, attribute
        from carbond.impacts import embodied_g, operational

        devices = self._sampler.step(self._read())
        now_mono, now_ns = time.monotonic(), time.time_ns()
        busy = self._host_cpu.busy_ticks()
        pids, cpu, rss = self._tree()
        interval_s = now_mono - self._last_mono
        busy_s, cpu_s = max(busy - self._busy, 0) / self._clk_tck, max(cpu - self._cpu, 0) / self._clk_tck
        self._last_mono, self._busy, self._cpu = now_mono, busy, cpu
        if not devices or not interval_s > 0:
            return
        run = self.run_id
        activity = Activity(cpu_busy_s=busy_s, ram_used_bytes=float(self._stats.virtual_memory().used),
                            run_cpu_s={run: cpu_s}, run_rss_bytes={run: float(rss)},
                            gpus=self._gpu_use([d.device for d in devices if d.kind == "gpu"], pids))
        shares = attribute([(d.device, d.kind, d.energy_j, self._idle_w.get(d.device, 0.0) * d.interval_s)
                            for d in devices], activity, self._policy)
        energy_j, kinds = 0.0, {}
        for d, share in zip(devices, shares, strict=True):
            joules = share.runs.get(run, 0.0)
            energy_j += joules
            if joules:
                self.sources[d.source] = self.sources.get(d.source, 0.0) + joules
                kinds[f"{d.kind}_energy_j"] = kinds.get(f"{d.kind}_energy_j", 0.0) + joules
        host_j = sum(d.energy_j for d in devices)  # embodied: the host's, in proportion to energy (as the daemon)
        embodied = embodied_g(interval_s, self._n_gpus, self._embodied) * energy_j / host_j if host_j > 0 else 0.0
        impact = operational(energy_j, self._factors(now_ns))
        self.energy_j += energy_j
        self.co2_g += impact.co2_g
        self.water_l += impact.water_l
        self.embodied_g += embodied
        self.ticks += 1
        point = make_point("job", {**self.tags, **run_tags(self.host, self.job, self.project, self.phase, run)},
                           {"energy_j": energy_j, "power_w": energy_j / interval_s, "co2_g": impact.co2_g,
                            "water_l": impact.water_l, "embodied_g": embodied, **kinds}, now_ns)
        with self._pending_lock:
            self._pending.append(point)

    def _take_pending(self) -> list[Point]:
        with self._pending_lock:
            points, self._pending = self._pending, []
        return points

    def _write_pending(self) -> None:
        points = self._take_pending()
        if points:
            try:
                _write(self._url, points)
            except Exception as exc:
                warn_once(f"writing the in-process measurement to {self._url} failed: {exc}")

    # --- the caller's side ------------------------------------------------------------------------------
    def stop(self, status: str, units: Mapping[str, float], metrics: Mapping[str, float],
             progress: tuple[float, float] | None = None, *, exit_code: int | None = None) -> RunResult:
        """Take the last tick, write the ``job`` points and the ``run`` point, return the result."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT_S)
        duration_s = time.monotonic() - self._t0
        measured = self._error is None and self.host != ""
        if not measured:
            warn_once(f"in-process measurement of run {self.run_id} failed: {self._error!r}")
            from carbond.config import load_settings

            self._settings = self._settings or load_settings().settings
            self.host = self._settings.daemon.host
            self._url = embedded_store_url(self._settings)
        energy = dict(energy_j=self.energy_j, co2_g=self.co2_g, water_l=self.water_l, embodied_g=self.embodied_g,
                      sources=dict(self.sources)) if measured else {}
        fields = run_fields(duration_s, units, metrics, progress=progress, exit_code=exit_code, **energy)
        tags = {**self.tags, **run_tags(self.host, self.job, self.project, self.phase, self.run_id), "status": status}
        points = [*self._take_pending(), make_point("run", tags, fields, time.time_ns())]
        try:
            _write(self._url, points)
        except Exception as exc:
            warn_once(f"writing the in-process measurement to {self._url} failed: {exc}")
        projected = (fields.get("projected_energy_j"), fields.get("projected_co2_g"))
        return RunResult(
            self.run_id, self.job, status, duration_s, self.energy_j / 3.6e6, self.co2_g / 1000.0, self.water_l,
            self.embodied_g / 1000.0, "in-process" if measured else "none", self.project, self.phase,
            sources=dict(self.sources), units=dict(units), metrics=dict(metrics), hosts=(self.host,),
            projected_energy_kwh=None if projected[0] is None else projected[0] / 3.6e6,
            projected_co2_kg=None if projected[1] is None else projected[1] / 1000.0, exit_code=exit_code,
        )
