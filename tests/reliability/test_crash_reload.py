"""A real ``carbond run`` killed with SIGKILL mid-delivery, again and again, and reloaded with SIGHUP
over and over while runs are active — against a real InfluxDB 1.6.7. Exact counts at the end."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import pytest

from carbond import ipc
from carbond.errors import CarbondError
from tests.conftest import wait_for
from tests.reliability.harness import assert_ticks_exact, proxied_url, stored

S = 1_000_000_000


@pytest.mark.parametrize("cycles", [4, pytest.param(12, marks=pytest.mark.slow)])
def test_repeated_kill_9_during_delivery_keeps_every_reported_tick(influx_db, faulty_proxy, live_daemons, cycles):
    """Injected: ``cycles`` times, SIGKILL of the daemon while one of its writes is in flight (the proxy
    holds the request 0.5 s, then still hands it to InfluxDB — stored, never acknowledged), then a restart
    on the same journal and spool. Asserted: for every killed life, exactly the ticks that ``carbond status
    --json`` reported just before the kill are in InfluxDB (host points in [start, last reported tick] =
    reported ticks − 1, each device at those times); the last life (stopped cleanly) exactly its own ticks;
    nothing anywhere twice, every device at every host time, and only the few ticks made between the last
    status and each kill besides."""
    server, db = influx_db.server, influx_db.name
    faults = faulty_proxy(server)
    d = live_daemons(proxied_url(faults, db))
    rng = random.Random(cycles)
    lives: list[tuple[int, int, int, float]] = []  # (started_ns, reported ticks, last reported tick's time, reported at)
    for _ in range(cycles):
        d.start()
        d.wait_ticks(rng.randint(4, 10))
        doc = d.cli_status()
        reported_at = time.monotonic()
        faults.in_flight.clear()
        faults.hold_s = 0.5
        assert faults.in_flight.wait(60), "no write reached the proxy"
        d.kill9()  # while that write is held in flight
        faults.hold_s = 0.0
        lives.append((d.started_ns, doc["stats"]["ticks"], doc["last_tick"]["time_ns"], time.monotonic() - reported_at))
        assert "stopped after" not in d.stderr()
    d.start()
    d.wait_ticks(6)
    d.wait_delivered()
    last = d.stop()
    assert last.returncode == 0, last.stderr
    for started_ns, ticks, last_ns, _ in lives:
        assert_ticks_exact(server, db, ticks - 1, since_ns=started_ns, until_ns=last_ns)
    assert_ticks_exact(server, db, last.ticks - 1, since_ns=d.started_ns)
    everything = assert_ticks_exact(server, db, None)
    reported = sum(t - 1 for _, t, _, _ in lives) + last.ticks - 1
    between = sum(gap for *_, gap in lives)  # seconds between each status and its kill
    assert reported <= len(everything) <= reported + between / 0.25 + 2 * cycles
    sent = Counter(line for w in faults.writes for line in w.lines)
    assert len(faults.held) >= cycles
    for lines in faults.held[:cycles]:  # each write cut off by a kill went again after the restart (idempotent)
        assert all(sent[line] >= 2 for line in lines)


CONFIG = """
[daemon]
interval_s = {interval}
log_level = "{level}"
[store]
flush_interval_s = {flush}
[region]
zone = "{zone}"
[impacts]
pue = {pue}
"""
VARIANTS = [dict(interval=0.25, level="info", flush=0.5, zone="DE", pue=1.2),
            dict(interval=0.2, level="debug", flush=0.8, zone="FR", pue=1.4)]

BURN = """
import time
while True:
    t = time.monotonic()
    while time.monotonic() - t < 0.03:
        pass
    time.sleep(0.07)
"""


@pytest.mark.parametrize("hups", [20, pytest.param(200, marks=pytest.mark.slow)])
def test_sighup_storm_with_active_runs_loses_no_point(influx_db, live_daemons, tmp_path, hups):
    """Injected: ``hups`` SIGHUPs 0.1–0.4 s apart while 3 runs burn CPU and a client sends run.log and
    status requests without pause; before each, the config file flips between two variants (tick interval
    0.25/0.2 s, flush interval 0.5/0.8 s, log level, zone DE/FR, PUE 1.2/1.4), and every seventh is a broken
    file (the reload is refused). Asserted: the daemon logged each reload; InfluxDB holds exactly one host
    point per measured tick and each device at those times; every host point keeps the factors it used
    (co2 = kWh × PUE × intensity); on every tick the runs' job points plus the unattributed remainder equal
    the host's energy (no job point lost); each run has exactly one final ``finished`` run point."""
    server, db = influx_db.server, influx_db.name
    conf = tmp_path / "carbond.toml"
    conf.write_text(CONFIG.format(**VARIANTS[0]))
    d = live_daemons(influx_db.url, interval_s=None, flush_interval_s=None, args=["--config", str(conf)])
    d.start()
    children = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(3)]
    stop_client = threading.Event()
    client_errors: list[str] = []
    try:
        runs = [ipc.request(d.socket, "run.start", job=f"load-{i}", pid=c.pid)["run"] for i, c in enumerate(children)]

        def client() -> None:
            n = 0
            while not stop_client.is_set():
                try:
                    ipc.request(d.socket, "run.log", run=runs[n % 3], values={"samples": 1.0}, timeout_s=30)
                    ipc.request(d.socket, "status", timeout_s=30)
                except (CarbondError, OSError) as exc:
                    client_errors.append(repr(exc))
                n += 1

        talker = threading.Thread(target=client)
        talker.start()
        d.wait_ticks(d.ticks() + 4)
        rng = random.Random(hups)
        for i in range(hups):
            conf.write_text("[daemon\n" if i % 7 == 6 else CONFIG.format(**VARIANTS[(i + 1) % 2]))
            d.signal(signal.SIGHUP)
            time.sleep(rng.uniform(0.1, 0.4))
        conf.write_text(CONFIG.format(**VARIANTS[0]))
        d.signal(signal.SIGHUP)
        d.wait_ticks(d.ticks() + 4)
        stop_client.set()
        talker.join(60)
    finally:
        stop_client.set()
        for c in children:
            c.kill()
            c.wait()
    # only this test's runs: a daemon also picks up env-tagged processes of anything else on the machine
    wait_for(lambda: not [r for r in (d.status() or {"runs": [{"run": runs[0]}]})["runs"] if r["run"] in runs], 60)
    stopped = d.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert not client_errors, client_errors[:3]
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.count("received SIGHUP") >= hups // 2  # signals close together may coalesce
    assert "reload failed, the running configuration stays" in stopped.stderr
    times = assert_ticks_exact(server, db, stopped.ticks - 1)
    hosts = {p.time_ns: p for p in stored(server, db, "host")}
    for h in hosts.values():
        f = h.fields
        assert f["co2_g"] == pytest.approx(f["energy_j"] / 3.6e6 * f["pue"] * f["intensity_g_per_kwh"], rel=1e-9)
    assert {h.fields["pue"] for h in hosts.values()} == {1.2, 1.4}
    assert {h.tags["region"] for h in hosts.values()} == {"DE", "FR"}
    jobs: dict[int, float] = defaultdict(float)
    for p in stored(server, db, "job"):
        jobs[p.time_ns] += p.fields["energy_j"]
    assert set(jobs) <= set(times) and len(jobs) > len(times) // 2
    for t in times:
        h = hosts[t].fields
        assert jobs.get(t, 0.0) + h["unattributed_j"] == pytest.approx(h["energy_j"], rel=1e-9, abs=1e-9)
    finals = [p for p in stored(server, db, "run") if p.tags["status"] == "finished" and p.tags["run"] in runs]
    assert sorted(p.tags["run"] for p in finals) == sorted(runs)


# --- runs at scale -------------------------------------------------------------------------------
def test_status_and_runs_answer_with_200_active_runs(carbond, live_daemons):
    """Injected: 200 active runs (one client, one run.start each). Asserted: ``carbond status --json`` exits 0
    and lists the 200 runs; the ``runs`` op (``carbond jobs``) answers them all; the daemon ticks on."""
    d = live_daemons(carbond.store, gpus=0)
    d.start()
    started = {ipc.request(d.socket, "run.start", job=f"many-{i}", timeout_s=30)["run"] for i in range(200)}
    r = carbond("status", "--json", "--socket", d.socket)
    assert r.returncode == 0, r.stderr[-500:]
    assert {x["run"] for x in json.loads(r.stdout)["runs"]} >= started  # and any env-tagged process on the machine
    assert {x["run"] for x in ipc.request(d.socket, "runs", timeout_s=30)["runs"]} >= started
    d.wait_ticks(d.ticks() + 4)
    stopped = d.stop()
    assert stopped.returncode == 0


def test_concurrent_run_ops_save_the_registry_without_losing_a_write(carbond, live_daemons):
    """Injected: 8 clients at once, each starting and ending 25 runs and leaving one more running, then SIGKILL
    of the daemon and a restart. Asserted: no save of the run registry failed (each run op saves it), and after
    the restart exactly the 8 runs left running are active again."""
    d = live_daemons(carbond.store, gpus=0)
    d.start()
    left: list[str] = []
    ended: list[str] = []

    def client(i: int) -> None:
        for k in range(25):
            run = ipc.request(d.socket, "run.start", job=f"c{i}-{k}", timeout_s=60)["run"]
            ipc.request(d.socket, "run.end", run=run, timeout_s=60)
            ended.append(run)
        left.append(ipc.request(d.socket, "run.start", job=f"c{i}-left", timeout_s=60)["run"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(left) == 8
    d.kill9()
    first_life = d.stderr()
    d.start()
    active = {r["run"] for r in d.status()["runs"]} & {*left, *ended}  # not env-tagged processes of anything else
    stopped = d.stop()
    assert stopped.returncode == 0
    assert first_life.count("could not save the run registry") == 0, [
        line for line in first_life.splitlines() if "could not save" in line][:2]
    assert active == set(left)
