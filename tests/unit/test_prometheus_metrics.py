"""Prometheus exposition built from tick points: counters sum, gauges hold the last tick, runs expire."""

from __future__ import annotations

from carbond import prometheus
from carbond.prometheus import Metrics, Sample, format_labels, format_value
from carbond.store.base import Point

DEV = {"host": "h", "device": "gpu0", "kind": "gpu", "source": "counter"}
RUN = {"host": "h", "project": "p", "job": "j", "phase": "training", "run": "r1", "variant": "x"}


def tick(t: int, gpu_j: float, run_j: float | None = None, region: str = "DE") -> list[Point]:
    pts = [Point("device", DEV, {"energy_j": gpu_j, "power_w": gpu_j / 0.5, "temperature_c": 60.0}, t),
           Point("host", {"host": "h", "region": region, "intensity_source": "table", "basis": "lifecycle"},
                 {"energy_j": gpu_j, "power_w": gpu_j / 0.5, "co2_g": gpu_j / 1000, "intensity_g_per_kwh": 300.0}, t)]
    if run_j is not None:
        pts.append(Point("job", RUN, {"energy_j": run_j, "power_w": run_j / 0.5, "co2_g": run_j / 1000}, t))
    return pts


def values(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")}


def test_counters_sum_gauges_keep_the_last_tick_and_stale_series_vanish():
    m = Metrics()
    m.observe(tick(1, 10.0, run_j=4.0))
    m.observe(tick(2, 6.0, region="FR"))  # no run this tick; region changed
    v = values(m.render())
    assert v['carbond_energy_joules_total{host="h",device="gpu0",kind="gpu",source="counter"}'] == 16.0
    assert v['carbond_power_watts{host="h",device="gpu0",kind="gpu"}'] == 12.0
    assert v['carbond_run_energy_joules_total{host="h",project="p",job="j",phase="training",run="r1"}'] == 4.0
    assert not any(k.startswith("carbond_run_power_watts") for k in v)  # the run had no power this tick
    intensity = [k for k in v if k.startswith("carbond_intensity_grams_per_kwh")]
    assert intensity == ['carbond_intensity_grams_per_kwh{host="h",region="FR",intensity_source="table",basis="lifecycle"}']
    assert v['carbond_co2_grams_total{host="h",region="DE"}'] == 0.01  # counters per region both stay
    assert v['carbond_co2_grams_total{host="h",region="FR"}'] == 0.006
    assert v["carbond_last_tick_timestamp_seconds"] == 2e-9


def test_run_series_expire_after_their_ttl():
    now = [0.0]
    m = Metrics(clock=lambda: now[0])
    m.observe(tick(1, 1.0, run_j=1.0))
    now[0] = prometheus.RUN_TTL_S - 1
    m.observe(tick(2, 1.0))
    assert "carbond_run_energy_joules_total" in m.render()
    now[0] = prometheus.RUN_TTL_S + 1
    m.observe(tick(3, 1.0))
    assert "carbond_run_" not in m.render()


def test_format_escapes_label_values_and_special_numbers():
    assert format_labels([("job", 'a"b\\c\nd')]) == '{job="a\\"b\\\\c\\nd"}'
    assert format_labels([]) == ""
    assert format_value(float("inf")) == "+Inf" and format_value(float("nan")) == "NaN" and format_value(2) == "2.0"


def test_extra_samples_get_one_header_per_family():
    text = Metrics().render([Sample("carbond_x", "gauge", "x", 1.0, (("a", "1"),)),
                             Sample("carbond_x", "gauge", "x", 2.0, (("a", "2"),))])
    assert text.count("# TYPE carbond_x gauge") == 1 and 'carbond_x{a="2"} 2.0' in text
