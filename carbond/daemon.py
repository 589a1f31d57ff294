"""Wiring: sensors → sampler → impacts → points → journal → store.

Every tick (the :class:`~carbond.ticker.Ticker` thread) reads the sensors, turns the
readings into points and appends them to the write-ahead journal — one ``write`` —
before it returns. A thread of its own (another Ticker) flushes the journal into the
store every ``store.flush_interval_s`` in one batch; APScheduler runs the slower jobs
(reports, rollups, intensity refreshes). Nothing is lost when the store is down or the
daemon is killed: segments stay on disk until the store has taken them and are replayed
at the next start. One failing sensor, provider or write never stops the daemon: it is
logged (rate-limited), counted in the ``carbond`` self-metrics, and retried. ``run``
stops cleanly on SIGTERM/SIGINT or after ``duration_s``: one last tick measures the
interval up to the stop, and every point is flushed. SIGHUP re-reads the configuration
(:mod:`carbond.reload` says what changes live). Under systemd (``Type=notify``) it reports
READY/RELOADING/STOPPING and pings the watchdog from the tick loop (:mod:`carbond.sdnotify`).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from carbond import __version__, ipc
from carbond.accounting import job_point, run_point, run_ticks
from carbond.attribution import Activity, GpuUse, attribute
from carbond.config import Settings
from carbond.errors import CarbondError
from carbond.factors import ImpactFactors, resolve_impact_factors
from carbond.impacts import Embodied, Factors, embodied_g
from carbond.intensity import IntensityProvider, ProviderSettings, make_provider
from carbond.jobs import Run, RunRegistry
from carbond.logutil import Throttled
from carbond.procs import CLK_TCK, PAGE_BYTES, read_file
from carbond.sampler import DeviceEnergy, Sampler, TickContext, tick_points
from carbond.sdnotify import Notifier
from carbond.sensors.base import Reading, Sensor
from carbond.store.base import Point, Store, make_point
from carbond.store.journal import Journal, journal_dir_for, read_segment

log = logging.getLogger(__name__)

HEAVY_MODULES = ("pandas", "matplotlib", "torch", "influxdb_client", "numpy")
SELF_METRICS_EVERY_S = 10.0  # the ``carbond`` measurement: the daemon watching itself
HOUR_NS = 3_600_000_000_000
# Run upkeep (membership refresh, environment discovery, runs that are over) every RUNS_EVERY_S. It
# rides on the tick thread's wake-up, after the tick, when ticks come at least that often (a thread
# of its own cost a wake-up, and an APScheduler job 0.2 ms more per fire, on the reference VM);
# with slower ticks it gets a timed-wait thread of its own. A process that joins a run between two
# passes is counted from its birth when found (all its CPU time); one that lives and dies in
# between is counted through its parent's cutime.
RUNS_EVERY_S = 2.0
DISCOVER_EVERY_S = 5.0  # environment discovery lists /proc: less often


def provider_settings(settings: Settings) -> ProviderSettings:
    i = settings.intensity
    return ProviderSettings(
        zone=settings.region.zone, intensity_g_per_kwh=settings.region.intensity_g_per_kwh, provider=i.provider,
        provider_zone=i.zone, series_file=i.series_file, series_basis=i.series_basis, api_url=i.api_url,
        token=i.token, emission_factor_type=i.emission_factor_type, marginal=i.marginal, marginal_zone=i.marginal_zone,
        watttime_username=i.watttime_username, watttime_password=i.watttime_password,
        marginal_api_url=i.marginal_api_url, timeout_s=i.timeout_s,
    )


def intensity_provider(settings: Settings) -> IntensityProvider:
    """The configured provider; bad configuration raises ConfigError here, at start."""
    return make_provider(provider_settings(settings))


@dataclass
class _LastTick:
    time_ns: int
    interval_s: float
    devices: list[DeviceEnergy]
    host: Point
    factors: Factors


class Daemon:
    def __init__(
        self,
        settings: Settings,
        sensors: list[Sensor],
        store: Store,
        provider: IntensityProvider | None = None,
        *,
        journal_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        reload_settings: Callable[[], Settings] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.sensors = sensors
        self.store = store
        self.provider = provider or intensity_provider(settings)
        self.journal = Journal(journal_dir or journal_dir_for(settings.store.url))
        self._clock = clock
        self._wall_ns = wall_ns
        self._sampler = Sampler()
        self._tick_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # the main thread's: a stop or a reload was asked for
        self._reload = threading.Event()
        self._reload_settings = reload_settings
        self.notifier = notifier or Notifier({})  # only `carbond run` talks to systemd
        self._last_status_mono = float("-inf")
        self.metrics: Any = None  # carbond.prometheus.Metrics when [prometheus] listen is set
        self._exporter: Any = None
        self._warn = Throttled(log)
        self._last_mono: float | None = None
        self._last_self_mono = float("-inf")
        self._max_lag_s = 0.0
        self._started_mono = clock()
        self._factors_cache: tuple[int, Factors] | None = None
        self._gpu_models = [d.model for s in sensors for d in s.devices() if d.kind == "gpu"]
        self.factors, self._embodied = self._impact_factors(settings)
        self._n_gpus = len(self._gpu_models)
        self.stats = {"ticks": 0, "write_errors": 0, "sensor_errors": 0, "dropped_points": 0,
                      "points_written": 0, "pending_points": 0}
        self.totals = {"energy_j": 0.0, "co2_g": 0.0, "water_l": 0.0, "embodied_g": 0.0}
        self._last: _LastTick | None = None
        self.runs = RunRegistry(settings.daemon.host, self.journal.directory / "runs.json", mono=clock)
        self._env_seen: dict[int, int] = {}
        self._last_discovery = float("-inf")
        self._busy_prev: int | None = None
        self._emit_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._process_sensors = [s for s in sensors if hasattr(s, "processes")]
        self._busy_sources = [s for s in sensors if hasattr(s, "busy_ticks")]
        self._scheduler: Any = None
        self._ticker: Any = None
        self._flusher: Any = None  # the flush loop (a Ticker): one timed wait per flush, no scheduler bookkeeping
        self._upkeep: Any = None  # run upkeep's own thread (Ticker), only while ticks are slower than RUNS_EVERY_S
        self._upkeep_lock = threading.Lock()
        self._last_upkeep = float("-inf")
        self._server: Any = None

    def _impact_factors(self, settings: Settings) -> tuple[ImpactFactors, Embodied]:
        factors = resolve_impact_factors(settings.impacts, settings.region.zone, self._gpu_models)
        gpu_kg, gpu_years = factors.gpus_as_one()
        return factors, Embodied(host_kg=factors.host_embodied.embodied_kg,
                                 host_lifetime_years=factors.host_embodied.lifetime_years,
                                 gpu_kg=gpu_kg, gpu_lifetime_years=gpu_years)

    # --- one tick -------------------------------------------------------------------------
    def _read_all(self) -> list[Reading]:
        readings: list[Reading] = []
        for sensor in self.sensors:
            try:
                readings.extend(sensor.read())
            except Exception as exc:  # one failing sensor never stops the others
                self.stats["sensor_errors"] += 1
                self._warn.warning(f"sensor:{type(sensor).__name__}", "%s failed: %s", type(sensor).__name__, exc)
        return readings

    def _factors(self, when_ns: int) -> Factors:
        """The factors of the hour ``when_ns`` falls in (the provider is asked once an hour)."""
        hour = when_ns // HOUR_NS
        cached = self._factors_cache
        if cached is not None and cached[0] == hour:
            return cached[1]
        from datetime import UTC, datetime

        i = self.provider.intensity_at(datetime.fromtimestamp(when_ns / 1e9, tz=UTC))
        f = self.factors
        factors = Factors(i.intensity_g_per_kwh, f.pue.value, f.wue_site_l_per_kwh.value, f.wue_source_l_per_kwh.value,
                          zone=i.zone, intensity_source=i.provider, basis=i.basis, marginal_g_per_kwh=i.marginal_g_per_kwh)
        self._factors_cache = (hour, factors)
        return factors

    def tick(self, final: bool = False) -> list[Point]:
        """Read, measure and journal one interval. Returns the points it produced.

        Self-metrics go out on the first tick, every SELF_METRICS_EVERY_S, and on the
        ``final`` tick at stop; ``tick_lag_s`` is the worst lag since the previous one.
        """
        with self._tick_lock:
            readings = self._read_all()
            now_mono = self._clock()
            now_ns = self._wall_ns()
            devices = self._sampler.step(readings)
            points: list[Point] = []
            busy = self._busy_ticks()
            busy_s = None if busy is None or self._busy_prev is None else max(busy - self._busy_prev, 0) / CLK_TCK
            self._busy_prev = busy
            if self._last_mono is not None:
                if devices:
                    interval_s = now_mono - self._last_mono
                    factors = self._factors(now_ns)
                    ctx = TickContext(self.settings.daemon.host, factors, self._embodied, self._n_gpus)
                    run_points: list[Point] = []
                    unattributed = None
                    if self.runs.runs:
                        unattributed, run_points = self._attribute(devices, busy_s, interval_s, now_ns, factors)
                    points = tick_points(devices, interval_s, now_ns, ctx, unattributed)
                    host = points[-1]
                    points.extend(run_points)
                    for key in self.totals:
                        self.totals[key] += host.fields.get(key, 0.0)
                    self._last = _LastTick(now_ns, interval_s, devices, host, factors)
                self._max_lag_s = max(self._max_lag_s, now_mono - self._last_mono - self.settings.daemon.interval_s)
            self._last_mono = now_mono
            self.stats["ticks"] += 1
            out = points
            if final or now_mono - self._last_self_mono >= SELF_METRICS_EVERY_S:
                host_name = self.settings.daemon.host
                with self.runs.lock:
                    totals = [run_point(r, host_name, now_ns, now_mono) for r in self.runs.runs.values()]
                out = [*points, *totals, self._self_point(now_ns, self._max_lag_s)]
                self._last_self_mono, self._max_lag_s = now_mono, 0.0
            self._journal(out)
            if self.metrics is not None:
                self.metrics.observe(out)
            return points

    def _busy_ticks(self) -> int | None:
        for sensor in self._busy_sources:
            busy = sensor.busy_ticks()  # type: ignore[attr-defined]
            if busy is not None:
                return int(busy)
        return None

    def _gpu_use(self) -> dict[str, GpuUse]:
        """Each GPU's processes grouped by the run that owns them (None: no run)."""
        out: dict[str, GpuUse] = {}
        for sensor in self._process_sensors:
            try:
                per_gpu = sensor.processes()  # type: ignore[attr-defined]
            except Exception as exc:  # process lists are a nicety: never fail the tick for them
                self._warn.warning("gpu-processes", "reading GPU processes failed: %s", exc)
                continue
            for device, procs in per_gpu.items():
                sm: dict[str | None, float] = {}
                mem: dict[str | None, float] = {}
                count: dict[str | None, int] = {}
                for pid, sm_pct, mem_bytes in procs:
                    owner = self.runs.owner(pid)
                    count[owner] = count.get(owner, 0) + 1
                    mem[owner] = mem.get(owner, 0.0) + mem_bytes
                    if sm_pct is not None:
                        sm[owner] = sm.get(owner, 0.0) + sm_pct
                out[device] = GpuUse(sm, mem, count)
        return out

    def _attribute(self, devices: list[DeviceEnergy], busy_s: float | None, interval_s: float, now_ns: int,
                   factors: Factors) -> tuple[float, list[Point]]:
        """Split this tick's device energy among the active runs: (unattributed J, job points)."""
        run_cpu_s, run_rss = self.runs.cpu_and_rss()
        ram_used = next((d.memory_used_bytes for d in devices if d.kind == "ram" and d.memory_used_bytes), 0.0)
        activity = Activity(busy_s or 0.0, ram_used or 0.0, run_cpu_s, run_rss, self._gpu_use())
        shares = attribute([(d.device, d.kind, d.energy_j, d.idle_w * d.interval_s) for d in devices], activity,
                           self.settings.attribution.idle_policy)
        host_energy = sum(d.energy_j for d in devices)
        host_embodied = embodied_g(interval_s, self._n_gpus, self._embodied)
        ticks = run_ticks(shares, {d.device: d.source for d in devices}, factors, host_energy, host_embodied)
        points = []
        with self.runs.lock:
            for t in ticks:
                run = self.runs.runs.get(t.run_id)
                if run is None:
                    continue
                self.runs.add_energy(t.run_id, t.energy_j, t.co2_g, t.water_l, t.embodied_g, t.sources)
                points.append(job_point(run, t, interval_s, now_ns, self.settings.daemon.host))
        return sum(s.unattributed_j for s in shares), points

    def _emit(self, points: list[Point]) -> None:
        """Journal points made outside a tick (run starts and ends from the socket or discovery)."""
        if not points:
            return
        with self._emit_lock:
            self._journal(points)

    def _journal(self, points: list[Point]) -> None:
        """Append points to the journal, counted as pending *before* the write: a flush running on another thread
        can take them into the store as soon as they are written, and must find them counted (counted after, a
        flush in between left them pending forever: found by the fleet benchmark)."""
        self._count(pending_points=len(points))
        try:
            self.journal.append(points)
        except OSError as exc:
            self._count(pending_points=-len(points), write_errors=1, dropped_points=len(points))
            log.error("journal %s refused %d points (%s): they are lost", self.journal.directory, len(points), exc)

    def _count(self, **deltas: int) -> None:
        """Add to ``stats`` (three threads count: the tick, socket/run upkeep and the flush); pending never below 0."""
        with self._stats_lock:
            for key, n in deltas.items():
                self.stats[key] += n
            if self.stats["pending_points"] < 0:  # segments left by an earlier run were never counted here
                self.stats["pending_points"] = 0

    def _run_point_now(self, run: Run) -> None:
        self._emit([run_point(run, self.settings.daemon.host, self._wall_ns(), self._clock())])

    def _fit_upkeep(self) -> None:
        """Run upkeep on the tick's wake-up when ticks come every RUNS_EVERY_S or faster, else on a thread of its own."""
        from carbond.ticker import Ticker

        own = self.settings.daemon.interval_s > RUNS_EVERY_S
        if own and self._upkeep is None:
            self._upkeep = Ticker(RUNS_EVERY_S, self.maintain_runs, name="carbond-runs")
            self._upkeep.start()
        elif not own and self._upkeep is not None:
            self._upkeep.stop()
            self._upkeep = None

    def _upkeep_after_tick(self) -> None:
        """The tick thread's share of run upkeep: every RUNS_EVERY_S (half a tick of slack), after the tick."""
        if self._upkeep is None and self._clock() - self._last_upkeep >= RUNS_EVERY_S - self.settings.daemon.interval_s / 2:
            self.maintain_runs()

    def maintain_runs(self) -> None:
        """Find new processes of runs, tagged processes, and runs that are over (never two passes at once)."""
        if not self._upkeep_lock.acquire(blocking=False):
            return  # another thread is at it (the upkeep moving between threads at a reload)
        try:
            now = self._last_upkeep = self._clock()
            if now - self._last_discovery >= DISCOVER_EVERY_S:
                self._last_discovery = now
                for run in self.runs.discover(self._env_seen, os.getpid()):
                    self._run_point_now(run)
            if self.runs.runs:
                self.runs.refresh_members(if_new_processes=True)
                for run in self.runs.end_vanished():
                    self._run_point_now(run)
        except Exception:  # run bookkeeping must never stop the daemon
            log.exception("run maintenance failed")
        finally:
            self._upkeep_lock.release()

    def _self_point(self, now_ns: int, lag_s: float) -> Point:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        delivery = self.delivery_counters()
        return make_point(
            "carbond",
            {"host": self.settings.daemon.host},
            {
                "spool_points": float(self.stats["pending_points"] + delivery.get("spool_points", 0)),
                "dropped_points": float(self.stats["dropped_points"] + delivery.get("dropped_points", 0)),
                "dead_letter_points": float(delivery.get("dead_letter_points", 0)),
                "write_errors": float(self.stats["write_errors"] + delivery.get("write_errors", 0)),
                "tick_lag_s": lag_s,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "rss_bytes": float(_rss_bytes()),
            },
            now_ns,
        )

    def delivery_counters(self) -> dict[str, int]:
        """The spool's counters when the store delivers through one (InfluxDB), else nothing."""
        counters = getattr(self.store, "counters", None)
        return vars(counters()) if counters is not None else {}

    # --- flushing -------------------------------------------------------------------------
    def flush(self) -> bool:
        """Move every closed journal segment into the store, oldest first.

        Returns True when nothing is left. A failing write leaves its segment (and the
        newer ones) on disk for the next flush.
        """
        with self._flush_lock:
            if self.runs.runs:
                self.runs.save()  # the totals, for a restart
            for segment in self.journal.rotate():
                points = list(read_segment(segment))
                if points:
                    try:
                        self.store.write(points)
                    except CarbondError as exc:
                        self._count(write_errors=1)
                        self._warn.warning("store", "writing %d points to %s failed (kept in the journal, will "
                                           "retry): %s", len(points), self.store.url, exc)
                        return False
                self.journal.discard(segment)
                self._count(points_written=len(points), pending_points=-len(points))
            return True

    def refresh_intensity(self) -> None:
        """Run the provider's network refresh (off the tick thread); the next tick sees its values."""
        refresh = getattr(self.provider, "refresh", None)
        if refresh is None:
            return
        try:
            refresh()
        except Exception as exc:  # a provider failure never stops the daemon: the table answers
            self._warn.warning("intensity", "intensity refresh failed: %s", exc)
        self._factors_cache = None

    def _safe_flush(self) -> None:
        try:
            self.flush()
        except Exception:  # the scheduler must keep running whatever a flush does
            log.exception("flush failed")

    # --- socket ops -----------------------------------------------------------------------
    def status(self, _args: dict[str, Any] | None = None) -> dict[str, Any]:
        last: dict[str, Any] = {}
        if self._last is not None:
            t, f, host = self._last, self._last.factors, self._last.host.fields
            last = {
                "time_ns": t.time_ns, "interval_s": t.interval_s, "power_w": host["power_w"],
                "intensity_g_per_kwh": f.intensity_g_per_kwh, "intensity_source": f.intensity_source,
                "basis": f.basis, "zone": f.zone, "pue": f.pue,
                "co2_g_per_h": host["co2_g"] / t.interval_s * 3600.0,
                "devices": [{"device": d.device, "kind": d.kind, "model": d.model, "source": d.source,
                             "power_w": d.power_w, "utilization_pct": d.utilization_pct} for d in t.devices],
            }
        return {
            "version": __version__,
            "pid": os.getpid(),
            "host": self.settings.daemon.host,
            "store": self.store.url,
            "interval_s": self.settings.daemon.interval_s,
            "uptime_s": self._clock() - self._started_mono,
            "last_tick": last,
            "totals": dict(self.totals),
            "stats": dict(self.stats, buffered_points=self.stats["pending_points"]),
            "delivery": self.delivery_counters(),
            "factors": self.factors.as_dict(),
            "intensity_provider": (self.provider.status() if hasattr(self.provider, "status")
                                   else {"provider": self.settings.intensity.provider}),
            "runs": [r.result(self.settings.daemon.host, self._wall_ns(), self._clock()) for r in list(self.runs.runs.values())],
            # the promise that the daemon stays light, checkable from outside
            "heavy_modules": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY_MODULES),
        }

    def device_list(self, _args: dict[str, Any] | None = None) -> list[dict[str, str]]:
        return [vars(d) for s in self.sensors for d in s.devices()]

    def now_ns(self) -> int:
        return self._wall_ns()

    def ops(self) -> dict[str, ipc.Op]:
        from carbond.run_ops import run_ops

        return {
            "ping": ipc.Op({}, lambda a: {"version": __version__}),
            "status": ipc.Op({}, self.status),
            "devices": ipc.Op({}, self.device_list),
            **run_ops(self),
        }

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        from carbond.server import SocketServer
        from carbond.ticker import Ticker

        leftover = [p for p in self.journal.segments() if p.stat().st_size > 0]
        if leftover and not self.flush():
            log.warning("%d journal segments from an earlier run could not be written yet; they stay in %s",
                        len(self.journal.segments()), self.journal.directory)
        elif leftover:
            log.info("replayed %d points left in the journal by an earlier run", self.stats["points_written"])
            self.stats["points_written"] = 0
        for run in self.runs.load():
            log.info("run %s (%s) %s after the restart", run.run_id, run.job,
                     "continues" if run.active else "had ended meanwhile")
            if not run.active:
                self._run_point_now(run)
        self._server = SocketServer(self.settings.daemon.socket, self.ops())
        if self.settings.prometheus.listen:
            self._start_exporter(self.settings.prometheus.listen)
        self.tick()  # the baseline reading of every device
        self._ticker = Ticker(self.settings.daemon.interval_s, self._loop_tick)
        self._ticker.start()
        self._fit_upkeep()
        self._flusher = Ticker(self.settings.store.flush_interval_s, self._safe_flush, name="carbond-flush")
        self._flusher.start()
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._schedule_refresh()
        from carbond.reports.schedule import schedule_reports, schedule_rollups

        schedule_reports(self._scheduler, self.settings.reports, self.settings)
        schedule_rollups(self._scheduler, self.settings)
        self._scheduler.start()
        log.info("carbond %s measuring %d devices every %gs into %s (flushed every %gs); socket %s%s", __version__,
                 sum(len(s.devices()) for s in self.sensors), self.settings.daemon.interval_s, self.store.url,
                 self.settings.store.flush_interval_s, self.settings.daemon.socket,
                 f"; Prometheus metrics on http://{self.settings.prometheus.listen}/metrics" if self._exporter else "")
        self._fit_watchdog()
        self.notifier.ready(self._status_line())

    def _schedule_refresh(self) -> None:
        """The provider's refresh job (live providers only), run at once and every ``intensity.refresh_s``."""
        from datetime import UTC, datetime

        from apscheduler.triggers.interval import IntervalTrigger

        if self._scheduler.get_job("intensity-refresh") is not None:
            self._scheduler.remove_job("intensity-refresh")
        if hasattr(self.provider, "refresh"):
            self._scheduler.add_job(self.refresh_intensity, IntervalTrigger(seconds=self.settings.intensity.refresh_s),
                                    id="intensity-refresh", max_instances=1, coalesce=True, misfire_grace_time=None,
                                    next_run_time=datetime.now(UTC))

    def _start_exporter(self, listen: str) -> None:
        from carbond.prometheus import Exporter, Metrics

        self.metrics = Metrics()
        self._exporter = Exporter(listen, self.metrics, self._live_samples)

    def _live_samples(self) -> list[Any]:
        """Scrape-time values for /metrics: the daemon's own counters."""
        from carbond.prometheus import Sample

        st = self.stats
        return [
            Sample("carbond_build_info", "gauge", "carbond version", 1.0, (("version", __version__),)),
            Sample("carbond_ticks_total", "counter", "Ticks since start", float(st["ticks"])),
            Sample("carbond_points_written_total", "counter", "Points moved from the journal into the store",
                   float(st["points_written"])),
            Sample("carbond_sensor_errors_total", "counter", "Failed sensor reads", float(st["sensor_errors"])),
            Sample("carbond_runs_active", "gauge", "Runs being measured", float(len(self.runs.runs))),
        ]

    def _fit_watchdog(self) -> None:
        """A watchdog shorter than three ticks would kill a healthy daemon: ask systemd for a longer one."""
        wd = self.notifier.watchdog_s
        need = 3 * self.settings.daemon.interval_s
        if 0 < wd < need:
            log.warning("WatchdogSec=%gs is shorter than three ticks of %gs; asking systemd for %gs", wd,
                        self.settings.daemon.interval_s, need)
            self.notifier.extend_watchdog(need)

    def _status_line(self) -> str:
        last = self._last
        power = f"{last.host.fields['power_w']:.0f} W, {last.factors.intensity_g_per_kwh:g} gCO2e/kWh, " if last else ""
        return (f"{power}{len(self.runs.runs)} runs, {self.stats['pending_points']} points buffered, every "
                f"{self.settings.daemon.interval_s:g}s into {self.store.url}")

    def tick_now(self) -> None:
        """An extra tick outside the schedule (a run ending); never raises into the caller."""
        if self._ticker is not None:
            self._safe_tick()

    def _safe_tick(self, final: bool = False) -> bool:
        try:
            self.tick(final)
            return True
        except Exception:  # one bad tick never ends the loop
            log.exception("tick failed")
            return False

    def _loop_tick(self) -> None:
        """The ticker's call: a tick, then the watchdog ping (only a working tick loop pings), the status, run upkeep."""
        if self._safe_tick():
            self.notifier.watchdog()
        if self.notifier.enabled and self._clock() - self._last_status_mono >= SELF_METRICS_EVERY_S:
            self._last_status_mono = self._clock()
            self.notifier.status(self._status_line())
        self._upkeep_after_tick()

    # --- reload ---------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    def reload(self) -> bool:
        """Re-read the configuration and apply what can change live; False when it was not usable."""
        if self._reload_settings is None:
            log.info("reload asked for, but this daemon has no configuration source to re-read")
            return False
        self.notifier.reloading()
        try:
            try:
                new = self._reload_settings()
                self.apply_settings(new)
            except CarbondError as exc:
                log.error("reload failed, the running configuration stays: %s", exc)
                return False
            return True
        finally:
            self.notifier.ready(self._status_line())

    def apply_settings(self, new: Settings) -> None:
        """Switch to ``new``: interval, flushes, log level, provider and factors live; the rest at a restart."""
        from carbond.reload import describe, plan_reload

        plan = plan_reload(self.settings, new)
        old = self.settings
        provider = intensity_provider(plan.settings) if plan.changed("intensity.", "region.") else None
        factors = self._impact_factors(plan.settings) if plan.changed("impacts.", "region.zone") else None
        with self._tick_lock:
            self.settings = plan.settings
            old_provider = None
            if provider is not None:
                old_provider, self.provider = self.provider, provider
            if factors is not None:
                self.factors, self._embodied = factors
            self._factors_cache = None
        if old_provider is not None:
            close = getattr(old_provider, "close", None)
            if close is not None:
                close()
        if plan.changed("daemon.log_level"):
            logging.getLogger().setLevel(getattr(logging, plan.settings.daemon.log_level.upper()))
        if plan.changed("daemon.interval_s") and self._ticker is not None:
            self._ticker.interval_s = plan.settings.daemon.interval_s  # from the next slot on
            self._fit_watchdog()
            self._fit_upkeep()
        if plan.changed("store.flush_interval_s") and self._flusher is not None:
            self._flusher.interval_s = plan.settings.store.flush_interval_s  # from the next slot on
        if self._scheduler is not None:
            if provider is not None or plan.changed("intensity.refresh_s"):
                self._schedule_refresh()
            if new.reports != old.reports:
                from carbond.reports.schedule import schedule_reports

                jobs = schedule_reports(self._scheduler, new.reports, self.settings)
                log.info("reload: %d scheduled reports", len(jobs))
        for spec in plan.applied:
            log.info("reload: %s", describe(spec, getattr(getattr(old, spec.section), spec.key),
                                             getattr(getattr(plan.settings, spec.section), spec.key)))
        for spec in plan.pending:
            log.warning("reload: %s changed in the configuration; it takes effect at the next restart (systemctl "
                        "restart carbond)", spec.path)
        if not plan.applied and not plan.pending:
            log.info("reload: the configuration has not changed")

    # --- running --------------------------------------------------------------------------
    def run(self, duration_s: float | None = None) -> None:
        """Start, wait for a signal or the duration (reloading on SIGHUP meanwhile), then stop cleanly."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.request_stop()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            log.info("received SIGHUP, reloading the configuration")
            self.request_reload()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hup)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            self.start()
            while not self._stop.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._wake.wait(timeout=left)
                self._wake.clear()
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
        finally:
            self.stop()
            for s, h in previous.items():
                signal.signal(s, h)

    def stop(self) -> None:
        self.notifier.stopping("flushing every point into the store")
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        if self._upkeep is not None:
            self._upkeep.stop()
            self._upkeep = None
        if self._flusher is not None:
            self._flusher.stop()  # after the flush in progress, if any
            self._flusher = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._exporter is not None:
            self._exporter.close()
            self._exporter = None
        self._safe_tick(final=True)  # measure up to the stop
        for attempt in range(3):
            if self.flush():
                break
            time.sleep(0.5 * (attempt + 1))
        else:
            log.error("the store %s is not taking points; %d points stay in the journal %s and are written at the "
                      "next start", self.store.url, self.stats["pending_points"], self.journal.directory)
        self.journal.close()
        close = getattr(self.provider, "close", None)
        if close is not None:
            close()
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception as exc:  # closing must not hide the flush
                log.debug("closing %s: %s", type(sensor).__name__, exc)
        delivery = self.delivery_counters()
        self.store.close()
        spooled = f" (handed to the spool for {self.store.url})" if delivery else ""
        log.info("stopped after %d ticks; %d points written%s", self.stats["ticks"], self.stats["points_written"], spooled)
        self.notifier.close()


def _rss_bytes() -> int:
    try:
        return int(read_file("/proc/self/statm", 256).split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0
