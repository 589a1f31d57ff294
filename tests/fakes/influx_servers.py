"""Real servers for the storage tests: InfluxDB 1.6.7 (``influxd``) and VictoriaMetrics.

- :class:`Influxd` runs ``influxd`` in a temporary directory on free loopback ports with
  the config of ``shared/TEST-SERVICES.md``; ``stop()``/``start()`` keep the data dir and
  the port (outage tests), ``kill()`` is SIGKILL. ``auth=True`` turns auth on with an admin
  user; ``max_body_size`` makes the real server answer 413 to large writes.
- :class:`VictoriaMetrics` is built once from Debian's Go packages and cached under
  ``$CARBOND_TEST_CACHE`` (default ``~/.cache/carbond-tests``); it accepts line protocol on
  ``/api/v2/write`` and answers ``/api/v1/export``. Without the packages the fixture
  installs them when running as root, else skips with the reason.

Fixtures (import them into a test module, or list this module in ``pytest_plugins``):
``influx_server`` (session), ``influx_db`` (a fresh database on it), ``influxd_factory``
(dedicated servers for outage/auth tests) and ``victoria`` (session).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ADMIN_USER, ADMIN_PASSWORD = "admin", "s3cret-admin"
VM_APT_PACKAGES = (
    "golang-go golang-github-victoriametrics-victoriametrics-dev golang-github-valyala-fastjson-dev "
    "golang-github-valyala-fastrand-dev golang-github-valyala-quicktemplate-dev golang-github-valyala-histogram-dev "
    "golang-github-victoriametrics-metrics-dev golang-github-victoriametrics-metricsql-dev "
    "golang-github-victoriametrics-fastcache-dev"
).split()
VM_PACKAGE = "github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen | None = None,
          log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout_s}s")
        time.sleep(0.05)


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          timeout_s: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    context = ssl._create_unverified_context() if url.startswith("https:") else None  # the harness's own checks only
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class Influxd:
    def __init__(self, root: Path, *, auth: bool = False, max_body_size: int | None = None, port: int | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.root = root
        self.tls = tls  # (certificate, private key), PEM
        self.auth = auth
        self.max_body_size = max_body_size
        self.port = port or free_port()
        self.rpc_port = free_port()
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, database: str, *, user: str = "", password: str = "", rp: str = "", host: str = "127.0.0.1") -> str:
        auth = f"{urllib.parse.quote(user)}:{urllib.parse.quote(password)}@" if user else ""
        scheme = "influxdb+v1s" if self.tls else "influxdb+v1"
        return f"{scheme}://{auth}{host}:{self.port}/{database}" + (f"?rp={rp}" if rp else "")

    def _config(self) -> str:
        d = self.root
        http_extra = ""
        if self.auth:
            http_extra += "  auth-enabled = true\n"
        if self.max_body_size is not None:
            http_extra += f"  max-body-size = {self.max_body_size}\n"
        if self.tls:
            http_extra += f'  https-enabled = true\n  https-certificate = "{self.tls[0]}"\n  https-private-key = "{self.tls[1]}"\n'
        return (f'reporting-enabled = false\nbind-address = "127.0.0.1:{self.rpc_port}"\n'
                f'[meta]\n  dir = "{d}/meta"\n[data]\n  dir = "{d}/data"\n  wal-dir = "{d}/wal"\n'
                f'  query-log-enabled = false\n'
                f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n{http_extra}'
                f'[ifql]\n  enabled = false\n[monitor]\n  store-enabled = false\n'
                f'[continuous_queries]\n  log-enabled = false\n')

    def ping(self) -> bool:
        return _http("GET", f"{self.base_url}/ping", timeout_s=2)[0] == 204

    def start(self, timeout_s: float = 60.0) -> Influxd:
        if shutil.which("influxd") is None:
            pytest.skip("influxd is not installed (apt-get install influxdb)")
        conf = self.root / "influxd.conf"
        conf.write_text(self._config())
        log = self.root / "influxd.log"
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(["influxd", "-config", str(conf)], stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        _wait(self.ping, timeout_s, f"influxd on port {self.port}", self.proc, log)
        if self.auth:
            status, body = _http("POST", f"{self.base_url}/query", urllib.parse.urlencode(
                {"q": f"CREATE USER {ADMIN_USER} WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES"}).encode(),
                {"Content-Type": "application/x-www-form-urlencoded", **self._auth_header()})
            if status != 200:
                raise RuntimeError(f"creating the admin user: HTTP {status}: {body!r}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.proc = None

    def _auth_header(self) -> dict[str, str]:
        if not self.auth:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()}

    def query(self, q: str, database: str = "") -> list[dict[str, Any]]:
        """The results of a query run as admin; raises on any error."""
        params = urllib.parse.urlencode({"db": database, "epoch": "ns"})
        status, body = _http("POST", f"{self.base_url}/query?{params}", urllib.parse.urlencode({"q": q}).encode(),
                             {"Content-Type": "application/x-www-form-urlencoded", **self._auth_header()})
        if status != 200:
            raise RuntimeError(f"query {q!r}: HTTP {status}: {body!r}")
        results = json.loads(body)["results"]
        for r in results:
            if "error" in r:
                raise RuntimeError(f"query {q!r}: {r['error']}")
        return results

    def create_database(self, name: str) -> str:
        self.query(f'CREATE DATABASE "{name}"')
        return name

    def series(self, q: str, database: str) -> list[dict[str, Any]]:
        return self.query(q, database)[0].get("series", [])

    def count(self, database: str, measurement: str, field: str = "energy_j") -> int:
        s = self.series(f'SELECT count("{field}") FROM "{measurement}"', database)
        return int(s[0]["values"][0][1]) if s else 0


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and 127.0.0.1 (and its key), made with ``openssl``; skips without it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    proc = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl: {proc.stderr}")
    return cert, key


class InfluxDb:
    """A fresh database on the session's server."""

    def __init__(self, server: Influxd, name: str) -> None:
        self.server, self.name = server, name
        self.url = server.url(name)


@pytest.fixture
def influx_db(influx_server: Influxd) -> Iterator[InfluxDb]:
    name = influx_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    yield InfluxDb(influx_server, name)
    try:
        influx_server.query(f'DROP DATABASE "{name}"')
    except RuntimeError:
        pass


@pytest.fixture
def influxd_factory(tmp_path: Path) -> Iterator[Callable[..., Influxd]]:
    servers: list[Influxd] = []

    def make(**kwargs: Any) -> Influxd:
        server = Influxd(tmp_path / f"influxd{len(servers)}", **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


# --- VictoriaMetrics -------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("CARBOND_TEST_CACHE") or Path.home() / ".cache" / "carbond-tests")


def _have_vm_sources() -> bool:
    return shutil.which("go") is not None and Path("/usr/share/gocode/src", VM_PACKAGE).is_dir()


def build_victoria_metrics() -> Path:
    """The cached binary, built on first use; skips the test when it cannot be built here."""
    binary = cache_dir() / "victoria-metrics"
    if binary.exists():
        return binary
    if not _have_vm_sources():
        if os.geteuid() != 0:
            pytest.skip("VictoriaMetrics needs Debian packages: apt-get install -y " + " ".join(VM_APT_PACKAGES))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *VM_APT_PACKAGES]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                pytest.skip(f"cannot install the VictoriaMetrics build packages ({' '.join(cmd[:2])}): {proc.stderr[-500:]}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f"victoria-metrics.{os.getpid()}.tmp")
    env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off", CGO_ENABLED="0",
               GOCACHE=str(cache_dir() / "gocache"), GOFLAGS="")
    proc = subprocess.run(["go", "build", "-o", str(tmp), VM_PACKAGE], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"building VictoriaMetrics failed:\n{proc.stderr[-3000:]}")
    tmp.replace(binary)
    shutil.rmtree(cache_dir() / "gocache", ignore_errors=True)
    return binary


class VictoriaMetrics:
    def __init__(self, binary: Path, root: Path) -> None:
        self.port = free_port()
        self.root = root
        log = root / "vm.log"
        with log.open("ab") as fh:
            self.proc = subprocess.Popen([str(binary), "-httpListenAddr", f"127.0.0.1:{self.port}", "-storageDataPath",
                                          str(root / "data"), "-retentionPeriod", "100y",
                                          "-search.latencyOffset", "0s"],
                                         stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait(lambda: _http("GET", f"{self.base_url}/health", timeout_s=2)[0] == 200, 60, "victoria-metrics",
              self.proc, log)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, bucket: str, org: str = "carbond") -> str:
        return f"influxdb+v2://127.0.0.1:{self.port}/{bucket}?org={org}"

    def export(self, match: str) -> list[dict[str, Any]]:
        """``/api/v1/export`` for a series selector: one dict per series (metric, values, timestamps in ms)."""
        _http("GET", f"{self.base_url}/internal/force_flush")
        status, body = _http("GET", f"{self.base_url}/api/v1/export?" + urllib.parse.urlencode({"match[]": match}))
        if status != 200:
            raise RuntimeError(f"export {match}: HTTP {status}: {body!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    vm = VictoriaMetrics(build_victoria_metrics(), tmp_path_factory.mktemp("victoria"))
    yield vm
    vm.stop()
