"""Prometheus ``/metrics`` for teams on Prometheus + Grafana (``[prometheus] listen = "HOST:PORT"``).

The same measurements the store gets, in Prometheus' text exposition format 0.0.4 (written
here: no dependency). Per-interval fields (joules, grams, litres) become **counters**,
summed since the daemon started; instantaneous ones (watts, intensity, utilization)
become **gauges** holding the last tick's value. Every tick hands its points to
:meth:`Metrics.observe` (a few dictionary updates under a lock); a scrape copies the
values under that lock and formats them on the HTTP thread, so a slow scraper never
delays a tick. The server thread blocks in ``accept``: idle, it costs nothing.

Run counters (``carbond_run_*``, labels host/project/job/phase/run) come from the ``job``
points; a run's series are dropped ``RUN_TTL_S`` after its last point, so a daemon that
sees thousands of runs keeps a bounded set of series.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from carbond.errors import UsageError
from carbond.store.base import Point

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RUN_TTL_S = 600.0
DEVICE = ("host", "device", "kind", "source")
DEVICE_GAUGE = ("host", "device", "kind")
RUN = ("host", "project", "job", "phase", "run")


@dataclass(frozen=True)
class Metric:
    name: str
    type: str  # "counter" (summed from per-interval fields), "total" (a running total, set), "gauge"
    help: str
    labels: tuple[str, ...]
    measurement: str
    field: str

    @property
    def exposed_type(self) -> str:
        return "counter" if self.type in ("counter", "total") else "gauge"


METRICS: tuple[Metric, ...] = (
    Metric("carbond_energy_joules_total", "counter", "IT energy used by each device (J)", DEVICE, "device", "energy_j"),
    Metric("carbond_power_watts", "gauge", "Power of each device over the last tick (W)", DEVICE_GAUGE, "device", "power_w"),
    Metric("carbond_utilization_percent", "gauge", "Utilization of each device over the last tick (%)", DEVICE_GAUGE,
           "device", "utilization_pct"),
    Metric("carbond_gpu_memory_used_bytes", "gauge", "GPU memory in use (bytes)", DEVICE_GAUGE, "device", "memory_used_bytes"),
    Metric("carbond_gpu_temperature_celsius", "gauge", "GPU temperature (°C)", DEVICE_GAUGE, "device", "temperature_c"),
    Metric("carbond_host_energy_joules_total", "counter", "IT energy of the whole host (J)", ("host",), "host", "energy_j"),
    Metric("carbond_host_power_watts", "gauge", "Power of the whole host over the last tick (W)", ("host",), "host", "power_w"),
    Metric("carbond_co2_grams_total", "counter", "Operational emissions, PUE included (gCO2e)", ("host", "region"), "host",
           "co2_g"),
    Metric("carbond_water_litres_total", "counter", "Water consumed, on site and in generation (L)", ("host", "region"),
           "host", "water_l"),
    Metric("carbond_embodied_grams_total", "counter", "Embodied emissions amortized over the measured time (gCO2e)",
           ("host",), "host", "embodied_g"),
    Metric("carbond_intensity_grams_per_kwh", "gauge", "Grid carbon intensity in use (gCO2e/kWh)",
           ("host", "region", "intensity_source", "basis"), "host", "intensity_g_per_kwh"),
    Metric("carbond_marginal_intensity_grams_per_kwh", "gauge", "Marginal emission rate, for planning only (gCO2/kWh)",
           ("host", "region"), "host", "marginal_g_per_kwh"),
    Metric("carbond_pue", "gauge", "Power usage effectiveness in use", ("host",), "host", "pue"),
    Metric("carbond_run_energy_joules_total", "counter", "IT energy attributed to each run (J)", RUN, "job", "energy_j"),
    Metric("carbond_run_co2_grams_total", "counter", "Operational emissions attributed to each run (gCO2e)", RUN, "job",
           "co2_g"),
    Metric("carbond_run_water_litres_total", "counter", "Water attributed to each run (L)", RUN, "job", "water_l"),
    Metric("carbond_run_embodied_grams_total", "counter", "Embodied emissions attributed to each run (gCO2e)", RUN, "job",
           "embodied_g"),
    Metric("carbond_run_power_watts", "gauge", "Power attributed to each run over the last tick (W)", RUN, "job", "power_w"),
    Metric("carbond_spool_points", "gauge", "Points measured but not yet in the store", ("host",), "carbond", "spool_points"),
    Metric("carbond_dropped_points_total", "total", "Points lost (journal or spool refused them)", ("host",), "carbond",
           "dropped_points"),
    Metric("carbond_dead_letter_points_total", "total", "Points the store rejected, kept aside", ("host",), "carbond",
           "dead_letter_points"),
    Metric("carbond_write_errors_total", "total", "Failed journal appends and store writes", ("host",), "carbond",
           "write_errors"),
    Metric("carbond_tick_lag_seconds", "gauge", "Worst lag of a tick behind its schedule since the last report (s)", ("host",),
           "carbond", "tick_lag_s"),
    Metric("carbond_process_cpu_seconds_total", "total", "CPU time used by the daemon (s)", ("host",), "carbond", "cpu_s"),
    Metric("carbond_process_resident_memory_bytes", "gauge", "Resident memory of the daemon (bytes)", ("host",), "carbond",
           "rss_bytes"),
)
_BY_MEASUREMENT: dict[str, tuple[Metric, ...]] = {
    m: tuple(x for x in METRICS if x.measurement == m) for m in {x.measurement for x in METRICS}
}
# a tick's host point means the tick's device/host/job points are all here: gauges of those start afresh
_FRESH_WITH = {"host": ("device", "host", "job"), "carbond": ("carbond",)}


@dataclass(frozen=True)
class Sample:
    """A value computed at scrape time (the daemon's live counters)."""

    name: str
    type: str  # "counter" or "gauge"
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class Metrics:
    """The values behind ``/metrics``. ``observe`` runs on the tick thread; ``render`` on the HTTP thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], float]] = {m.name: {} for m in METRICS}
        self._runs_seen: dict[tuple[str, ...], float] = {}
        self._clock = clock
        self.last_tick_ns = 0

    def observe(self, points: Iterable[Point]) -> None:
        points = list(points)
        present = {p.measurement for p in points}
        with self._lock:
            for group, measurements in _FRESH_WITH.items():
                if group in present:
                    for m in measurements:
                        for metric in _BY_MEASUREMENT[m]:
                            if metric.type == "gauge":
                                self._values[metric.name] = {}
            now = self._clock()
            for p in points:
                metrics = _BY_MEASUREMENT.get(p.measurement)
                if metrics is None:
                    continue
                for metric in metrics:
                    value = p.fields.get(metric.field)
                    if value is None:
                        continue
                    labels = tuple(p.tags.get(t, "") for t in metric.labels)
                    series = self._values[metric.name]
                    series[labels] = series.get(labels, 0.0) + value if metric.type == "counter" else value
                if p.measurement == "job":
                    self._runs_seen[tuple(p.tags.get(t, "") for t in RUN)] = now
                elif p.measurement == "host":
                    self.last_tick_ns = max(self.last_tick_ns, p.time_ns)
            if "host" in present:
                self._expire_runs(now)

    def _expire_runs(self, now: float) -> None:
        stale = [k for k, seen in self._runs_seen.items() if now - seen > RUN_TTL_S]
        for key in stale:
            del self._runs_seen[key]
            for metric in _BY_MEASUREMENT["job"]:
                self._values[metric.name].pop(key, None)

    def render(self, extra: Iterable[Sample] = ()) -> str:
        with self._lock:
            snapshot = {name: dict(series) for name, series in self._values.items() if series}
            last_tick_ns = self.last_tick_ns
        lines: list[str] = []
        for metric in METRICS:
            series = snapshot.get(metric.name)
            if not series:
                continue
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.exposed_type}")
            for labels, value in sorted(series.items()):
                lines.append(f"{metric.name}{format_labels(zip(metric.labels, labels, strict=True))} {format_value(value)}")
        samples = list(extra)
        if last_tick_ns:
            samples.append(Sample("carbond_last_tick_timestamp_seconds", "gauge",
                                  "End of the last measured interval (Unix time, s)", last_tick_ns / 1e9))
        seen: set[str] = set()
        for s in samples:
            if s.name not in seen:
                seen.add(s.name)
                lines.append(f"# HELP {s.name} {s.help}")
                lines.append(f"# TYPE {s.name} {s.type}")
            lines.append(f"{s.name}{format_labels(s.labels)} {format_value(s.value)}")
        return "\n".join(lines) + "\n"


def format_labels(pairs: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in pairs]
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def parse_listen(listen: str) -> tuple[socket.AddressFamily, str, int]:
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], int(port)
    return socket.AF_INET, host, int(port)


class Exporter:
    """Serves ``/metrics`` on ``listen`` from a thread until ``close``."""

    def __init__(self, listen: str, metrics: Metrics, extra: Callable[[], Iterable[Sample]] = lambda: ()) -> None:
        family, host, port = parse_listen(listen)
        self.metrics = metrics
        exporter = self

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # a client that connects and says nothing is dropped, its thread freed

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] == "/metrics":
                    try:
                        body = exporter.metrics.render(extra()).encode()
                    except Exception:  # a bug here must not kill the server thread
                        log.exception("rendering /metrics failed")
                        self.send_error(500)
                        return
                    self._reply(200, CONTENT_TYPE, body)
                elif self.path == "/":
                    self._reply(200, "text/plain; charset=utf-8", b"carbond: metrics at /metrics\n")
                else:
                    self.send_error(404)

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("prometheus %s: " + format, self.address_string(), *args)

        try:
            self._httpd = Server((host, port), Handler)
        except OSError as exc:
            raise UsageError(f"[prometheus] listen {listen!r}: cannot listen: {exc.strerror}") from exc
        self.address = self._httpd.server_address
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="carbond-prometheus", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.address[1])

    def _serve(self) -> None:
        while not self._closed:
            self._httpd.handle_request()  # blocks in select until a client comes (timeout None)

    def close(self) -> None:
        self._closed = True
        try:
            self._httpd.socket.shutdown(socket.SHUT_RDWR)  # wakes the blocking select/accept
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._httpd.server_close()
