"""Attribution: conservation, non-negativity, exclusive and shared GPUs (hypothesis + hand cases)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbond.attribution import Activity, GpuUse, attribute, gpu_fractions, run_totals

RUNS = ["r1", "r2", "r3"]


def test_cpu_split_by_cpu_time_rest_unattributed():
    act = Activity(cpu_busy_s=2.0, ram_used_bytes=1.0, run_cpu_s={"r1": 1.0, "r2": 0.5})
    [cpu] = attribute([("cpu0", "cpu", 100.0, 30.0)], act, "proportional")
    assert cpu.runs == {"r1": 50.0, "r2": 25.0} and cpu.unattributed_j == 25.0 and cpu.method == "cpu-time"
    [cpu] = attribute([("cpu0", "cpu", 100.0, 30.0)], act, "unattributed")
    assert cpu.runs == {"r1": 35.0, "r2": 17.5} and cpu.unattributed_j == pytest.approx(47.5)


def test_exclusive_gpu_belongs_wholly_to_its_run():
    use = GpuUse(sm_pct={"r1": 40.0}, memory_bytes={"r1": 1e9}, processes={"r1": 3})
    act = Activity(1.0, 1.0, gpus={"gpu0": use})
    [g] = attribute([("gpu0", "gpu", 700.0, 70.0)], act)
    assert g.runs == {"r1": 700.0} and g.unattributed_j == 0.0 and g.method == "exclusive"


def test_shared_gpu_split_by_sm_then_memory():
    use = GpuUse(sm_pct={"r1": 60.0, "r2": 20.0, None: 20.0}, memory_bytes={"r1": 1.0, "r2": 3.0},
                 processes={"r1": 1, "r2": 1, None: 1})
    [g] = attribute([("gpu0", "gpu", 100.0, 0.0)], Activity(1.0, 1.0, gpus={"gpu0": use}))
    assert g.runs == pytest.approx({"r1": 60.0, "r2": 20.0}) and g.unattributed_j == pytest.approx(20.0)
    assert g.method == "sm-util"
    no_sm = GpuUse(sm_pct={}, memory_bytes={"r1": 1.0, "r2": 3.0}, processes={"r1": 1, "r2": 1})
    [g] = attribute([("gpu0", "gpu", 100.0, 0.0)], Activity(1.0, 1.0, gpus={"gpu0": no_sm}))
    assert g.runs == pytest.approx({"r1": 25.0, "r2": 75.0}) and g.method == "memory"


def test_gpu_without_processes_or_only_foreign_ones_is_unattributed():
    assert gpu_fractions(None) == ({}, "none")
    assert gpu_fractions(GpuUse(processes={None: 2})) == ({}, "none")
    [g] = attribute([("gpu1", "gpu", 50.0, 10.0)], Activity(1.0, 1.0, gpus={}))
    assert g.runs == {} and g.unattributed_j == 50.0


def test_shares_above_the_whole_are_scaled_down():
    # two /proc reads a few ms apart can give runs more CPU time than the host's busy time
    act = Activity(cpu_busy_s=1.0, ram_used_bytes=1.0, run_cpu_s={"r1": 0.9, "r2": 0.3})
    [cpu] = attribute([("cpu0", "cpu", 12.0, 0.0)], act)
    assert cpu.runs == pytest.approx({"r1": 9.0, "r2": 3.0}) and cpu.unattributed_j == pytest.approx(0.0, abs=1e-12)


def test_unknown_policy():
    with pytest.raises(ValueError, match="proportional, unattributed"):
        attribute([], Activity(1.0, 1.0), "fair")


finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
weights = st.dictionaries(st.sampled_from(RUNS), st.floats(min_value=-10.0, max_value=1e4, allow_nan=False), max_size=3)
gpu_use = st.builds(
    GpuUse,
    sm_pct=st.dictionaries(st.sampled_from([*RUNS, None]), st.floats(0.0, 100.0), max_size=4),
    memory_bytes=st.dictionaries(st.sampled_from([*RUNS, None]), st.floats(0.0, 8e10), max_size=4),
    processes=st.dictionaries(st.sampled_from([*RUNS, None]), st.integers(0, 5), max_size=4),
)
devices = st.lists(
    st.tuples(st.sampled_from(["cpu0", "cpu1", "gpu0", "gpu1", "ram"]), finite, finite), min_size=1, max_size=5
).map(lambda ds: [(name, name.rstrip("01"), e, idle) for name, e, idle in ds])


@settings(max_examples=600, deadline=None)
@given(devices, st.floats(0.0, 64.0), st.floats(0.0, 1e12), weights, weights,
       st.dictionaries(st.sampled_from(["gpu0", "gpu1"]), gpu_use, max_size=2), st.sampled_from(["proportional", "unattributed"]))
def test_conservation_and_non_negativity(devs, busy, ram_used, cpu_s, rss, gpus, policy):
    act = Activity(busy, ram_used, cpu_s, rss, gpus)
    for share in attribute(devs, act, policy):
        assert share.unattributed_j >= 0.0
        assert all(v >= 0.0 and math.isfinite(v) for v in share.runs.values())
        total = math.fsum([*share.runs.values(), share.unattributed_j])
        assert total == pytest.approx(share.energy_j, rel=1e-12, abs=1e-9)
        assert set(share.runs) <= set(RUNS)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(RUNS), st.integers(1, 8), finite, finite, st.sampled_from(["proportional", "unattributed"]))
def test_exclusive_ownership(run, n_procs, energy, idle, policy):
    use = GpuUse(sm_pct={run: 10.0}, processes={run: n_procs})
    [g] = attribute([("gpu0", "gpu", energy, idle)], Activity(1.0, 1.0, gpus={"gpu0": use}), policy)
    expected = energy if policy == "proportional" else max(energy - idle, 0.0)
    assert set(g.runs) <= {run}
    assert g.runs.get(run, 0.0) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(RUNS), st.floats(0.5, 100.0), min_size=2, max_size=3),
       st.floats(0.0, 100.0), st.floats(1.0, 1e5))
def test_shared_gpu_split_follows_sm_utilization(sm, foreign_sm, energy):
    use = GpuUse(sm_pct={**sm, None: foreign_sm}, processes={**{r: 1 for r in sm}, None: 1})
    [g] = attribute([("gpu0", "gpu", energy, 0.0)], Activity(1.0, 1.0, gpus={"gpu0": use}))
    whole = sum(sm.values()) + foreign_sm
    for run, pct in sm.items():
        assert g.runs[run] == pytest.approx(energy * pct / whole, rel=1e-9)
    assert run_totals([g]) == pytest.approx(g.runs)
