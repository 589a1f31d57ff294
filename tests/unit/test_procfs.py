from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from carbond.sensors.procfs import Procfs


def _fixture(tmp_path: Path, busy: int, idle: int, available_kb: int) -> Path:
    # user nice system idle iowait irq softirq steal guest guest_nice
    (tmp_path / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2 3\n")
    (tmp_path / "meminfo").write_text(
        f"MemTotal:       1000000 kB\nMemFree:          100000 kB\nMemAvailable:   {available_kb} kB\nBuffers: 1 kB\n")
    return tmp_path


def test_cpu_percent_is_the_busy_share_since_the_previous_call(tmp_path: Path):
    root = _fixture(tmp_path, busy=100, idle=900, available_kb=750000)
    p = Procfs(str(root))
    assert p.cpu_percent() == 0.0  # the first call only primes
    _fixture(tmp_path, busy=130, idle=970, available_kb=750000)  # +30 busy, +70 idle
    assert p.cpu_percent() == pytest.approx(30.0)
    with pytest.raises(ValueError, match="non-blocking"):
        p.cpu_percent(interval=0.5)


def test_virtual_memory_uses_available(tmp_path: Path):
    p = Procfs(str(_fixture(tmp_path, 1, 1, available_kb=750000)))
    vm = p.virtual_memory()
    assert (vm.total, vm.available, vm.used, vm.percent) == (1_024_000_000, 768_000_000, 256_000_000, 25.0)


def test_agrees_with_psutil_on_this_machine():
    p = Procfs()
    vm, ref = p.virtual_memory(), psutil.virtual_memory()
    assert vm.total == ref.total
    assert vm.percent == pytest.approx(ref.percent, abs=2.0)
    assert p.cpu_count() == psutil.cpu_count(logical=True)
