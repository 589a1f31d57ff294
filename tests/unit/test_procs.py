"""carbond.procs readers on fixture /proc trees and on this machine's /proc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from carbond.procs import Proc, read_file


def test_read_file_reads_past_one_buffer(tmp_path: Path):
    data = bytes(range(256)) * 1000  # 256,000 bytes: several reads of 65,536
    (tmp_path / "big").write_bytes(data)
    assert read_file(str(tmp_path / "big")) == data
    assert read_file(str(tmp_path / "big"), 100) == data  # a read size that divides nothing evenly
    (tmp_path / "exact").write_bytes(b"x" * 1024)
    assert read_file(str(tmp_path / "exact"), 1024) == b"x" * 1024


def test_last_pid_follows_the_kernel_file_it_keeps_open(tmp_path: Path):
    (tmp_path / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "ns_last_pid").write_text("4242\n")
    proc = Proc(str(tmp_path))
    assert proc.last_pid() == 4242
    with open(tmp_path / "sys" / "kernel" / "ns_last_pid", "r+") as fh:  # rewritten in place, like the kernel's
        fh.write("4243\n")
    assert proc.last_pid() == 4243


def test_stat_environ_and_status_of_a_real_child():
    env = dict(os.environ, CARBOND_JOB="probe", CARBOND_PHASE="training", UNRELATED="x")
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"  # running Python, not mid-exec
        proc = Proc()
        st = proc.stat(child.pid)
        assert st is not None and st.ppid == os.getpid() and st.rss_bytes > 0
        assert proc.environ(child.pid) == {"CARBOND_JOB": "probe", "CARBOND_PHASE": "training"}
        assert proc.uid(child.pid) == os.getuid()
        assert child.pid in proc.children(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert proc.stat(child.pid) is None and proc.environ(child.pid) is None and proc.uid(child.pid) is None
