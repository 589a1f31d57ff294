"""Fuzzed inputs: config files, intensity series CSV, store URLs, socket messages.

Each input carbond accepts from a user or a client has one contract: it is taken, or refused
with carbond's own error (exit code 2, ``UsageError``, an error reply) — never a traceback,
never exit code 1, never a dead daemon. Hypothesis generates the inputs (seeded by the
test's name, so a run is reproducible; ``@example`` pins every input that once broke the
contract). The socket fuzz of 10,000 messages on one connection is
``tests/integration/test_runs.py::test_bad_messages_get_error_replies_and_10000_fuzzed_ones_crash_nothing``;
here, concurrent connections, ragged writes and abrupt disconnects, with the daemon's ticks
counted exactly afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import socket
import string
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from carbond import ipc
from carbond.cli import main
from carbond.config import SPECS
from carbond.errors import StoreUrlError, UsageError
from carbond.intensity.live import hourly_means
from carbond.intensity.series import Series, parse_series
from carbond.intensity.table import BASES
from carbond.store.urls import StoreUrl, parse_store_url
from tests.reliability.harness import LiveDaemon

# --- config files ----------------------------------------------------------------------------------
SECTION_KEYS: dict[str, list[str]] = {}
for _spec in SPECS:
    SECTION_KEYS.setdefault(_spec.section, []).append(_spec.key)

bare_keys = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
texts = st.text(max_size=40)
plausible_strings = st.sampled_from(["", "DE", "FR", "WORLD", "info", "debug", "table", "series", "proportional",
                                     "watttime", "lifecycle", "sqlite:///tmp/x.db", "sqlite://relative.db",
                                     "influxdb+v1://127.0.0.1:8086/carbond", "influxdb+v2://h:1/b?org=o",
                                     "influxdb+v1://[::1/db", "influxdb+v1://u:p@h:0/db", "127.0.0.1:9464", ":9464",
                                     "[::1]:9464", "[::1:9464", "/nonexistent/token", "/", "a\x00b", "1e400", "-1"])
scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), plausible_strings, texts,
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30))])),
    st.dates(), st.times())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(bare_keys, inner, max_size=3)), max_leaves=6)


def toml_key(key: str) -> str:
    return key if key and all(c in string.ascii_letters + string.digits + "_-" for c in key) else json.dumps(key)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return v.isoformat()  # datetime, date, time


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    """A TOML document: mostly known sections and keys with values of any TOML type, some unknown ones,
    sometimes a table array or a top-level key; or plain text that may not be TOML at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    out = []
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.one_of(st.sampled_from(sorted(SECTION_KEYS)), bare_keys))
        header = f"[[{toml_key(section)}]]" if draw(st.integers(0, 19)) == 0 else f"[{toml_key(section)}]"
        lines = [header]
        used: set[str] = set()
        for _ in range(draw(st.integers(0, 5))):
            key = draw(st.one_of(st.sampled_from(SECTION_KEYS.get(section) or ["x"]), bare_keys, texts))
            if key in used:
                continue
            used.add(key)
            lines.append(f"{toml_key(key)} = {toml_value(draw(values))}")
        out.append("\n".join(lines))
    if draw(st.integers(0, 9)) == 0:
        out.insert(0, f"{toml_key(draw(bare_keys))} = {toml_value(draw(values))}")
    return "\n".join(out) + "\n"


_CLEAN_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}


def config_check(path: Path) -> tuple[int, str]:
    """``carbond config check --config PATH`` in this process (the CLI's own main): exit code, stderr."""
    err = io.StringIO()
    with mock.patch.dict(os.environ, _CLEAN_ENV, clear=True), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(err):
        code = main(["config", "check", "--config", str(path)])
    return code, err.getvalue()


def _config_contract(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "carbond.toml"
        path.write_text(text, encoding="utf-8")
        code, err = config_check(path)  # an exception here (a traceback from the real CLI) fails the test
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("carbond: error: "), err


CONFIG_EXAMPLES = [
    '[store]\ntoken_file = "a\\u0000b"\n',  # a NUL in a path: ValueError from open()
    '[store]\nurl = "influxdb+v1://[::1/db"\n',  # urlsplit's ValueError
    '[store]\nurl = "influxdb+v1://[xyz]:8086/db"\n',
]


def _with_examples(test: Any) -> Any:
    for text in CONFIG_EXAMPLES:
        test = example(text)(test)
    return test


@_with_examples
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_texts())
def test_fuzzed_config_files_exit_0_or_2(text):
    """Injected: 300 generated TOML files (known and unknown sections and keys, values of every TOML type,
    table arrays, top-level keys, non-TOML text) and the pinned examples. Asserted: ``carbond config check``
    exits 0 or 2 (with carbond's one-line error naming the file), never 1 or a traceback."""
    _config_contract(text)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_texts())
def test_fuzzed_config_files_exit_0_or_2_long(text):
    """The same with 5,000 generated files."""
    _config_contract(text)


def _hostile(tmp: Path, kind: str) -> Path:
    path = tmp / "carbond.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not UTF-8":
        path.write_bytes(b'[daemon]\nhost = "\xff\xfe"\n')
    elif kind == "nested 5000 deep":
        path.write_text("[daemon]\nhost = " + "[" * 5000 + "]" * 5000 + "\n")
    elif kind == "BOM":
        path.write_bytes(b'\xef\xbb\xbf[daemon]\nhost = "a"\n')
    elif kind == "NUL byte":
        path.write_bytes(b'[daemon]\nhost = "a\x00"\n')
    elif kind == "empty":
        path.write_text("")
    elif kind == "10 MB of comment":
        path.write_text("# " + "x" * 10_000_000 + "\n")
    return path


@pytest.mark.parametrize("kind", ["directory", "not UTF-8", "nested 5000 deep", "BOM", "NUL byte", "empty",
                                  "10 MB of comment"])
def test_hostile_config_files_through_the_real_cli(carbond, tmp_path, kind):
    """Injected: a config path that is a directory, a file that is not UTF-8, arrays nested 5,000 deep,
    a byte-order mark, a raw NUL byte, an empty file, 10 MB of comment — each given to the real
    ``python -m carbond config check``. Asserted: exit 0 or 2, no traceback."""
    r = carbond("config", "check", "--config", str(_hostile(tmp_path, kind)))
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr, (r.returncode, r.stderr[-2000:])


# --- intensity series CSV --------------------------------------------------------------------------
zones = st.sampled_from(["Z", "z", "+00:00", "+01:00", "-12:00", "+14:00", "+23:59", "-23:59", ""])
time_texts = st.one_of(
    st.builds(lambda d, z: d.isoformat() + z, st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
              zones),
    st.builds(lambda d: d.isoformat(), st.dates()),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00Z", "2026-13-01T00:00:00Z", "now", "", "2026-11-30 13:00",
                     "2026-11-30T13:00:00.123456789Z", "-1"]),
    texts)
number_texts = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                         st.sampled_from(["", " 12 ", "1e3", "1_000", "0x10", "-0", "9999.999", "10000"]), texts)
headers = st.sampled_from(["", "time,intensity_g_per_kwh", "time,intensity_g_per_kwh,marginal_g_per_kwh,basis",
                           "timestamp,value,basis", "start,carbon_intensity", "time,intensity,intensity",
                           "Time,Value,Extra", "# comment"])


@st.composite
def series_texts(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=300))
    lines = [draw(headers)]
    start = draw(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
    step = draw(st.sampled_from([60, 900, 1800, 3600, 7200, -3600, 0]))
    for i in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 5))
        t = (start + timedelta(seconds=step * i)).isoformat() if kind else draw(time_texts)
        fields = [t, draw(number_texts) if kind < 2 else str(draw(st.floats(0, 9999)))]
        if draw(st.booleans()):
            fields.append(draw(st.one_of(number_texts, st.just(""))))
        if draw(st.booleans()):
            fields.append(draw(st.sampled_from(["lifecycle", "direct", "LIFECYCLE", "", "other"])))
        sep = draw(st.sampled_from([",", ",", ", ", ";", "\t"]))
        lines.append(sep.join(fields))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


def _series_contract(text: str) -> None:
    try:
        series = parse_series(text, "fuzz.csv")
    except UsageError as exc:
        assert str(exc).startswith("fuzz.csv"), exc
        return
    assert isinstance(series, Series) and series.basis in BASES and series.points
    starts = [p.start for p in series.points]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for p in (*series.points, *series.marginal):
        assert p.start.tzinfo is not None and p.duration_s > 0 and 0 <= p.value_g_per_kwh < 10000
        assert p.end > p.start  # usable: the provider's status and forecast read each point's end
    hourly_means(series.points)


@example("0001-01-01T00:00:00+01:00,5")  # OverflowError converting to UTC
@example("9999-12-31T23:30:00Z,100")  # a point whose end is past datetime.max
@settings(max_examples=1000, deadline=None)
@given(series_texts())
def test_fuzzed_series_csv_is_refused_with_usage_error_or_parsed_into_a_valid_series(text):
    """Injected: 1,000 generated CSVs (headers and aliases, times of any year and offset, numbers of every
    form, extra columns, separators, line endings, plain text) and the pinned examples. Asserted:
    ``parse_series`` raises ``UsageError`` naming the file, or returns a series with increasing,
    timezone-aware, positive-length periods of finite values in [0, 10000) whose ends are representable."""
    _series_contract(text)


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None)
@given(series_texts())
def test_fuzzed_series_csv_long(text):
    """The same with 20,000 generated CSVs."""
    _series_contract(text)


# --- store URLs ------------------------------------------------------------------------------------
url_chars = st.text(alphabet=string.ascii_letters + string.digits + ":/@?#[]%&=+.-_ \t\n\x00é", max_size=30)


@st.composite
def store_urls(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80))
    scheme = draw(st.sampled_from(["sqlite", "influxdb+v1", "influxdb+v2", "influxdb+v1s", "influxdb+v2s", "INFLUXDB+V1",
                                   "influxdb", "http", ""]))
    if scheme == "sqlite":
        return f"sqlite://{draw(st.sampled_from(['/', '', '//', '/tmp/']))}{draw(url_chars)}"
    user = draw(st.one_of(st.just(""), st.builds(lambda u, p: f"{u}:{p}@", url_chars, url_chars), url_chars.map(lambda u: u + "@")))
    host = draw(st.one_of(st.sampled_from(["127.0.0.1", "localhost", "[::1]", "[::1", "::1", "[xyz]", "", "h"]), url_chars))
    port = draw(st.one_of(st.integers(-5, 70000).map(lambda p: f":{p}"), st.just(""), st.just(":"),
                          url_chars.map(lambda x: ":" + x)))
    path = draw(st.one_of(st.just("/carbond"), st.just(""), st.just("/"), url_chars.map(lambda x: "/" + x)))
    query = draw(st.one_of(st.just(""), st.just("?org=o"), st.just("?rp=r"), url_chars.map(lambda x: "?" + x)))
    return f"{scheme}://{user}{host}{port}{path}{query}"


def _url_contract(text: str) -> None:
    try:
        url = parse_store_url(text)
    except StoreUrlError:
        return
    assert isinstance(url, StoreUrl)
    if url.kind == "sqlite":
        assert url.path.startswith("/")
        return
    assert url.kind == "influxdb" and url.version in (1, 2) and url.host and url.database and "/" not in url.database
    assert 1 <= url.port <= 65535, url
    assert url.version == 1 or url.org
    if url.password:
        assert f":{url.password}@" not in url.redacted()
        assert "***" in url.redacted() or not url.username


@example("influxdb+v1://[::1/db")  # ValueError: Invalid IPv6 URL
@example("influxdb+v1://[xyz]:8086/db")  # ValueError from .hostname
@example("influxdb+v1://u:p@h:0/db")  # port 0 accepted
@settings(max_examples=2000, deadline=None)
@given(store_urls())
def test_fuzzed_store_urls_raise_store_url_error_or_parse_to_a_usable_url(text):
    """Injected: 2,000 generated URLs (every scheme, user info, IPv4/IPv6/bracket-broken hosts, ports from -5
    to 70000 and not numbers, paths, queries, control characters) and the pinned examples. Asserted:
    ``parse_store_url`` raises ``StoreUrlError`` or returns a URL with a host, a port in 1-65535, one database
    name (and an org for v2), whose redacted form hides the password."""
    _url_contract(text)


@pytest.mark.slow
@settings(max_examples=50_000, deadline=None)
@given(store_urls())
def test_fuzzed_store_urls_long(text):
    """The same with 50,000 generated URLs."""
    _url_contract(text)


# --- socket messages -------------------------------------------------------------------------------
OPS = ["run.start", "run.attach", "run.log", "run.end", "run.progress", "run.get", "runs", "status", "devices", "ping", "x", ""]
KEYS = ["job", "run", "values", "done", "total", "pid", "phase", "tags", "status", "exit_code", "origin", "project", "v",
        "op", "zz"]
VALUES: list[Any] = [None, True, -1, 0, 2**40, -(2**70), 1.5, float("1e308"), "", "a" * 300, "job\n", [], {},
                     {"samples": 1}, {"a": "b"}, {"x": None}, "training", "finished", "failed", "track", {"k": "v"},
                     {"samples": 1e308}, {"samples": -1}]


def _message(rng: random.Random, runs: list[str]) -> bytes:
    kind = rng.random()
    if kind < 0.08:
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 120))).replace(b"\n", b" ")
    msg: dict[str, Any] = {"v": 1 if rng.random() < 0.9 else rng.choice(VALUES), "op": rng.choice(OPS)}
    for _ in range(rng.randrange(0, 4)):
        key = rng.choice(KEYS)
        msg[key] = rng.choice(runs) if key == "run" and runs and rng.random() < 0.5 else rng.choice(VALUES)
    if msg["op"] == "run.start" and rng.random() < 0.5:
        msg["job"] = f"fuzz-{rng.randrange(5)}"
        msg.pop("pid", None)
    return json.dumps(msg).encode()


def _fuzz_connection(path: str, seed: int, n: int, runs: list[str], out: dict[str, int]) -> None:
    """Send ``n`` messages, mostly one line per write; sometimes split a line over several writes, send several
    lines in one write, or drop the connection mid-line and reconnect. Every complete line that is not blank
    gets one reply (a blank line is skipped without one: docs/ipc.md)."""
    rng = random.Random(seed)
    sent = 0
    while sent < n:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(60)
            s.connect(path)
            fh = s.makefile("rb")
            while sent < n:
                batch = [_message(rng, runs) for _ in range(rng.choice([1, 1, 1, 3]))]
                data = b"".join(line + b"\n" for line in batch)
                if rng.random() < 0.02:  # hang up in the middle of a line
                    s.sendall(data[: max(1, len(data) // 2)])
                    out["hangups"] += 1
                    sent += len(batch)
                    break
                if len(batch) == 1 and rng.random() < 0.2:  # (several lines in tiny writes while not reading the
                    for i in range(0, len(data), 7):        # replies can fill both socket buffers: the daemon's send
                        s.sendall(data[i:i + 7])            # then times out after 30 s and closes, as a client would)
                else:
                    s.sendall(data)
                for _ in [line for line in batch if line.strip()]:
                    reply = json.loads(ipc.read_line(fh, limit=ipc.MAX_REPLY_BYTES) or b"{}")  # status lists every run
                    assert reply.get("v") == 1 and isinstance(reply.get("ok"), bool), reply
                    out["replies"] += 1
                    if reply["ok"] and isinstance(reply.get("result"), dict) and "run" in reply["result"]:
                        runs.append(str(reply["result"]["run"]))
                sent += len(batch)
            fh.close()


def _socket_fuzz(carbond: Any, connections: int, per_connection: int) -> None:
    d = LiveDaemon(carbond, carbond.store, gpus=1)
    d.start()
    counters = [{"replies": 0, "hangups": 0} for _ in range(connections)]
    runs: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def work(i: int) -> None:
        try:
            _fuzz_connection(d.socket, 1000 + i, per_connection, runs, counters[i])
        except BaseException as exc:
            errors.append(exc)

    def janitor() -> None:
        """Ends the runs the fuzz started, every 2 s: each run op rewrites the whole registry, so thousands of
        active runs would slow every op down (docs/reliability.md), and ``status`` lists them all."""
        ended = 0
        while not done.wait(2.0):
            upto = len(runs)
            for run in runs[ended:upto]:
                end_run(run)
            ended = upto

    def end_run(run: str) -> None:
        try:
            ipc.request(d.socket, "run.end", run=run, timeout_s=60)
        except ipc.ProtocolError as exc:  # ended long ago: the daemon remembers the last 256 ended runs
            assert "no run" in str(exc), exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
    sweeper = threading.Thread(target=janitor)
    try:
        sweeper.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(1200)
        done.set()
        sweeper.join(300)
        assert not errors, errors[:3]
        for run in set(runs):  # a fuzzed run.start may have joined (reopened) an ended one
            end_run(run)
        before = d.ticks()
        doc = d.wait_ticks(before + 4)  # still ticking
        assert not [r for r in doc["runs"] if r["run"] in runs]  # (env-tagged processes of anything else may be there)
        stopped = d.stop()
    finally:
        d.close()
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr and "internal error" not in stopped.stderr
    replies = sum(c["replies"] for c in counters)
    assert replies >= connections * per_connection * 0.9
    hosts = carbond.export("host")
    assert len(hosts) == stopped.ticks - 1  # the fuzz cost no tick
    devices = carbond.export("device")
    assert len(devices) == (stopped.ticks - 1) * 3  # cpu0, ram, gpu0


def test_fuzzed_messages_on_concurrent_ragged_connections(carbond):
    """Injected: 4 connections at once, 1,500 fuzzed messages each (random ops, fields and values, 8% random
    bytes), 20% of single-line writes split into 7-byte pieces, some writes carrying 3 lines, 2% of connections hung up
    mid-line and reopened. Asserted: every complete line got exactly one well-formed reply, in order; no
    traceback or internal error in the daemon's log; the daemon kept ticking and, after a clean stop, the
    store holds exactly one host point per measured tick and 3 device points each."""
    _socket_fuzz(carbond, connections=4, per_connection=1500)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fuzzed_messages_long(carbond):
    """The same with 8 connections × 15,000 messages (120,000 in all)."""
    _socket_fuzz(carbond, connections=8, per_connection=15_000)


def test_the_pinned_examples_through_the_real_cli(carbond, tmp_path):
    """The pinned config examples through the real ``python -m carbond config check``: exit 0 or 2, no traceback."""
    for i, text in enumerate(CONFIG_EXAMPLES):
        path = tmp_path / f"c{i}.toml"
        path.write_text(text)
        r = carbond("config", "check", "--config", str(path))
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, (text, r.returncode, r.stderr[-1500:])
    r = subprocess.run([sys.executable, "-m", "carbond", "run", "--store", "influxdb+v1://[::1/db", "--duration", "1"],
                       env=carbond.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
