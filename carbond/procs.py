"""Processes from /proc: CPU time, memory, children, owner, environment, PID namespaces.

Everything a run tracker needs to know about the processes of a run, read from the
kernel's files. Nothing is cached across calls except open file descriptors; a process
that vanished mid-read is simply absent (None).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator
from typing import NamedTuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
ENV_KEYS = (b"CARBOND_JOB", b"CARBOND_PROJECT", b"CARBOND_PHASE", b"CARBOND_RUN", b"SLURM_JOB_ID", b"SLURM_JOB_NAME",
            b"SLURM_STEP_ID", b"TORCHELASTIC_RUN_ID")


class ProcStat(NamedTuple):
    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime: the process and its reaped children
    start_ticks: int  # since boot: with the pid, identifies the process (pids are reused)
    rss_bytes: int


def read_file(path: str, size: int = 65536) -> bytes:
    """A small /proc file in three system calls (``open()`` makes nine and builds a buffered file object)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, size)
        if len(data) < size:
            return data
        chunks = [data]  # /proc files can be longer than one read (environ, status of a big process)
        while chunk := os.read(fd, size):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class Proc:
    """Readers over one /proc tree (``root`` lets tests use a fixture tree)."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root
        self._last_pid_fd: int | None = None  # kept open (closed with this object): read every few seconds
        self._last_pid_field = 0

    def stat(self, pid: int) -> ProcStat | None:
        try:
            return parse_stat(pid, read_file(f"{self.root}/{pid}/stat", 1024))
        except OSError:
            return None

    def open_stat(self, pid: int) -> int | None:
        """A descriptor on ``/proc/PID/stat`` to re-read with :func:`read_stat` (None: gone).

        It stays bound to that process: once it exits, reads fail (ESRCH) even if the pid is
        reused, so a kept descriptor can never read another process's times.
        """
        try:
            return os.open(f"{self.root}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None


    def children(self, pid: int) -> list[int]:
        """Direct children of every thread of ``pid`` (``/proc/PID/task/TID/children``)."""
        out: list[int] = []
        try:
            tids = os.listdir(f"{self.root}/{pid}/task")
        except OSError:
            return out
        for tid in tids:
            try:
                out.extend(int(c) for c in read_file(f"{self.root}/{pid}/task/{tid}/children").split())
            except (OSError, ValueError):
                continue
        return out

    def descendants(self, roots: Iterable[int]) -> set[int]:
        """Every live process below ``roots`` (roots included when alive)."""
        seen: set[int] = set()
        stack = [r for r in roots if os.path.exists(f"{self.root}/{r}")]
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            stack.extend(self.children(pid))
        return seen

    def last_pid(self) -> int | None:
        """The pid the kernel handed out last in this PID namespace (threads count too); None when unknown.

        While it stays the same, no process or thread was created, so a scan of ``/proc`` (300 µs
        cold on the reference VM) would find nothing new: reading this costs a tenth of that.
        ``ns_last_pid`` needs CONFIG_CHECKPOINT_RESTORE; the last field of ``loadavg`` says the same.
        """
        if self._last_pid_fd is None:
            for name, field_index in (("sys/kernel/ns_last_pid", 0), ("loadavg", 4)):
                try:
                    fd = os.open(f"{self.root}/{name}", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue
                self._last_pid_fd, self._last_pid_field = fd, field_index
                weakref.finalize(self, os.close, fd)
                break
            else:
                return None
        try:
            return int(os.pread(self._last_pid_fd, 128, 0).split()[self._last_pid_field])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self) -> Iterator[int]:
        for name in os.listdir(self.root):
            if name.isdigit():
                yield int(name)

    def status_fields(self, pid: int) -> dict[str, str]:
        try:
            text = read_file(f"{self.root}/{pid}/status").decode(errors="replace")
        except OSError:
            return {}
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def uid(self, pid: int) -> int | None:
        """Real uid of the process, or None if it is gone."""
        uid = self.status_fields(pid).get("Uid")
        return int(uid.split()[0]) if uid else None

    def nspid(self, pid: int) -> list[int]:
        """The pid in each PID namespace the process belongs to, outermost first (``NSpid:``)."""
        line = self.status_fields(pid).get("NSpid")
        return [int(x) for x in line.split()] if line else [pid]

    def pid_namespace(self, pid: int | str) -> str | None:
        try:
            return os.readlink(f"{self.root}/{pid}/ns/pid")
        except OSError:
            return None

    def environ(self, pid: int) -> dict[str, str] | None:
        """The tagging variables of the process environment (None: unreadable or gone)."""
        try:
            data = read_file(f"{self.root}/{pid}/environ")
        except OSError:
            return None
        out = {}
        for item in data.split(b"\0"):
            key, _, value = item.partition(b"=")
            if key in ENV_KEYS:
                out[key.decode()] = value.decode(errors="replace")
        return out

    def resolve(self, declared: int, peer_pid: int) -> int | None:
        """The pid, in this daemon's namespace, of process ``declared`` as the peer sees it.

        A client in another PID namespace (a container) knows its processes by their pid
        in that namespace; ``/proc/PID/status`` lists each process's pid in every namespace
        (``NSpid``), so the process whose innermost pid is ``declared`` and that shares the
        peer's namespace is the one meant.
        """
        peer_ns = self.pid_namespace(peer_pid)
        if peer_ns is None or peer_ns == self.pid_namespace("self"):
            return declared if os.path.exists(f"{self.root}/{declared}") else None
        for pid in self.pids():
            ns = self.nspid(pid)
            if ns[-1] == declared and len(ns) > 1 and self.pid_namespace(pid) == peer_ns:
                return pid
        return None


class HostCpu:
    """Busy CPU ticks of the whole host from /proc/stat (the same units as ProcStat.cpu_ticks)."""

    def __init__(self, root: str = "/proc") -> None:
        self._fd = os.open(f"{root}/stat", os.O_RDONLY | os.O_CLOEXEC)

    def busy_ticks(self) -> int:
        first = os.pread(self._fd, 256, 0).split(b"\n", 1)[0].split()
        v = [int(x) for x in first[1:9]]
        return sum(v) - v[3] - v[4]  # all but idle and iowait

    def close(self) -> None:
        os.close(self._fd)


def parse_stat(pid: int, data: bytes) -> ProcStat | None:
    try:
        rest = data[data.rindex(b")") + 2:].split()
        return ProcStat(pid, int(rest[1]), int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14]),
                        int(rest[19]), int(rest[21]) * PAGE_BYTES)
    except (ValueError, IndexError):
        return None


def read_stat(pid: int, fd: int) -> ProcStat | None:
    """Re-read a descriptor from :meth:`Proc.open_stat`; None once the process is gone."""
    try:
        return parse_stat(pid, os.pread(fd, 1024, 0))
    except OSError:
        return None
