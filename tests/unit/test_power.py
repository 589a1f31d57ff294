"""Counter arithmetic, the utilization model and the hardware tables (carbond.power)."""

from __future__ import annotations

import math

import pytest

from carbond.power import (
    CPU_W_PER_THREAD_DEFAULT,
    GPU_POWER_DEFAULT_W,
    UtilizationModel,
    counter_delta,
    cpu_tdp_w,
    gpu_power_range_w,
    trapezoid_j,
)

RAPL_WRAP_J = 262_143.328850  # a real max_energy_range_uj (262143328850 µJ) in J


# --- counter_delta ---------------------------------------------------------------------------
def test_normal_delta():
    d = counter_delta(1000.0, 1150.5, RAPL_WRAP_J, ceiling_j=500.0)
    assert d.event == "ok"
    assert d.energy_j == pytest.approx(150.5)


def test_zero_delta_is_ok_not_a_reset():
    d = counter_delta(42.0, 42.0, RAPL_WRAP_J, ceiling_j=10.0)
    assert (d.energy_j, d.event) == (0.0, "ok")


def test_wraparound_uses_max_energy_range():
    # 30 J before the wrap point, then 70 J past zero: 100 J used.
    d = counter_delta(RAPL_WRAP_J - 30.0, 70.0, RAPL_WRAP_J, ceiling_j=500.0)
    assert d.event == "wrap"
    assert d.energy_j == pytest.approx(100.0, abs=1e-6)


def test_wrap_exactly_to_zero():
    d = counter_delta(RAPL_WRAP_J - 12.0, 0.0, RAPL_WRAP_J, ceiling_j=500.0)
    assert d.event == "wrap"
    assert d.energy_j == pytest.approx(12.0, abs=1e-6)


def test_counter_going_backwards_far_from_wrap_is_a_reset():
    # A driver reload: the counter restarts near zero from the middle of its range.
    # The "wrap" reading would be ~131 kJ in one second: not plausible, so a reset.
    d = counter_delta(131_000.0, 3.0, RAPL_WRAP_J, ceiling_j=500.0)
    assert d.event == "reset"
    assert d.energy_j is None


def test_counter_going_backwards_without_wrap_point_is_a_reset():
    # NVML's 64-bit mJ counter does not wrap; backwards means the driver reloaded.
    d = counter_delta(5_000.0, 4_999.0, None, ceiling_j=1e12)
    assert d.event == "reset"
    assert d.energy_j is None


def test_zero_or_negative_wrap_point_means_no_wrap():
    assert counter_delta(100.0, 10.0, 0.0, 1e9).event == "reset"
    assert counter_delta(100.0, 10.0, -5.0, 1e9).event == "reset"


def test_previous_value_above_wrap_point_is_not_a_wrap():
    # A counter can never exceed its range; if it did, the wrap arithmetic is meaningless.
    d = counter_delta(RAPL_WRAP_J + 10.0, 5.0, RAPL_WRAP_J, ceiling_j=1e9)
    assert d.event == "reset"
    assert d.energy_j is None


def test_absurd_forward_jump_is_rejected():
    d = counter_delta(10.0, 10.0 + 501.0, RAPL_WRAP_J, ceiling_j=500.0)
    assert d.event == "absurd"
    assert d.energy_j is None


def test_delta_at_the_ceiling_is_accepted():
    d = counter_delta(10.0, 510.0, None, ceiling_j=500.0)
    assert (d.energy_j, d.event) == (500.0, "ok")


def test_absurd_wrap_is_a_reset_not_energy():
    # Going backwards by a little near the top of the range: a "wrap" would be ~262 kJ.
    d = counter_delta(100.0, 99.0, RAPL_WRAP_J, ceiling_j=500.0)
    assert d.energy_j is None
    assert d.event == "reset"


@pytest.mark.parametrize(
    ("prev", "cur"),
    [(math.nan, 1.0), (1.0, math.nan), (math.inf, 1.0), (1.0, math.inf), (-math.inf, 1.0), (math.nan, math.nan)],
)
def test_non_finite_readings_are_never_energy(prev: float, cur: float):
    d = counter_delta(prev, cur, RAPL_WRAP_J, ceiling_j=1e12)
    assert d.energy_j is None
    assert d.event == "absurd"


def test_never_negative_over_a_grid_of_inputs():
    values = [0.0, 1.0, 99.0, 100.0, 131_000.0, RAPL_WRAP_J - 1.0, RAPL_WRAP_J]
    for prev in values:
        for cur in values:
            for wrap in (None, RAPL_WRAP_J):
                d = counter_delta(prev, cur, wrap, ceiling_j=500.0)
                assert d.energy_j is None or 0.0 <= d.energy_j <= 500.0, (prev, cur, wrap, d)


# --- trapezoid and utilization model ------------------------------------------------------
def test_trapezoid():
    assert trapezoid_j(100.0, 300.0, 2.0) == pytest.approx(400.0)
    assert trapezoid_j(50.0, 50.0, 0.5) == pytest.approx(25.0)


def test_utilization_model_is_the_seed_line():
    m = UtilizationModel(idle_w=50.0, max_w=250.0)
    assert m.power_w(0.0) == pytest.approx(50.0)
    assert m.power_w(25.0) == pytest.approx(100.0)
    assert m.power_w(100.0) == pytest.approx(250.0)


@pytest.mark.parametrize(("util", "expected"), [(-20.0, 50.0), (-0.001, 50.0), (100.5, 250.0), (1e9, 250.0)])
def test_utilization_model_clamps(util: float, expected: float):
    assert UtilizationModel(idle_w=50.0, max_w=250.0).power_w(util) == pytest.approx(expected)


# --- tables ---------------------------------------------------------------------------------
def test_cpu_tdp_whole_package():
    # EPYC 7763: 280 W, 64 cores / 128 threads; a machine that sees all 128 gets 280 W.
    watts, source = cpu_tdp_w("AMD EPYC 7763 64-Core Processor", 128)
    assert watts == pytest.approx(280.0)
    assert "EPYC 7763" in source


def test_cpu_tdp_scales_by_share_of_threads_seen():
    # a 2-vCPU VM on that part: 280 × 2 / 128
    assert cpu_tdp_w("AMD EPYC 7763 64-Core Processor", 2)[0] == pytest.approx(4.375)
    # two sockets of Xeon 8380 (270 W, 80 threads each): 160 threads seen
    assert cpu_tdp_w("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz", 160)[0] == pytest.approx(540.0)


def test_cpu_tdp_matching_is_case_insensitive():
    assert cpu_tdp_w("amd epyc 7742 64-core processor", 128)[0] == pytest.approx(225.0)


def test_cpu_tdp_default_per_logical_cpu():
    watts, source = cpu_tdp_w("Some Future CPU 9000", 12)
    assert watts == pytest.approx(12 * CPU_W_PER_THREAD_DEFAULT)
    assert CPU_W_PER_THREAD_DEFAULT == 5.0
    assert source.startswith("default")


def test_cpu_tdp_zero_logical_cpus_counts_as_one():
    assert cpu_tdp_w("Some Future CPU 9000", 0)[0] == pytest.approx(CPU_W_PER_THREAD_DEFAULT)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", (70.0, 700.0)),
        ("NVIDIA H100 PCIe", (50.0, 350.0)),  # the PCIe card is checked before the SXM one
        ("NVIDIA H200", (75.0, 700.0)),
        ("NVIDIA A100-SXM4-80GB", (55.0, 400.0)),
        ("NVIDIA A100-PCIE-40GB", (35.0, 250.0)),
        ("NVIDIA A10G", (25.0, 300.0)),
        ("NVIDIA A10", (25.0, 150.0)),
        ("NVIDIA L40S", (35.0, 350.0)),
        ("NVIDIA L40", (35.0, 300.0)),  # a 300 W card, not the 72 W L4
        ("NVIDIA L4", (16.0, 72.0)),
        ("Tesla T4", (10.0, 70.0)),
        ("Tesla V100-SXM2-16GB", (40.0, 300.0)),
    ],
)
def test_gpu_power_table(name: str, expected: tuple[float, float]):
    assert gpu_power_range_w(name) == expected


def test_gpu_power_default():
    assert gpu_power_range_w("Some Unknown Accelerator") == GPU_POWER_DEFAULT_W == (30.0, 300.0)
