"""Store URLs: ``sqlite:///ABS/PATH.db``, ``influxdb+v1[s]://…``, ``influxdb+v2[s]://…``.

Parsing is pure and cheap (no backend imports), so config validation can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from carbond.errors import StoreUrlError

VALID_FORMS = (
    "sqlite:///ABSOLUTE/PATH.db",
    "influxdb+v1://[USER:PASS@]HOST:PORT/DATABASE[?rp=RP]",
    "influxdb+v2://HOST:PORT/BUCKET?org=ORG",
    "(influxdb+v1s:// and influxdb+v2s:// for https)",
)
_INFLUX_SCHEMES = {"influxdb+v1": (1, False), "influxdb+v1s": (1, True), "influxdb+v2": (2, False), "influxdb+v2s": (2, True)}


@dataclass(frozen=True)
class StoreUrl:
    kind: str  # "sqlite" | "influxdb"
    version: int = 0  # InfluxDB API version (1 or 2)
    tls: bool = False
    path: str = ""  # sqlite file
    host: str = ""
    port: int = 0
    database: str = ""  # v1 database or v2 bucket
    username: str = ""
    password: str = ""
    rp: str = ""
    org: str = ""

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def redacted(self) -> str:
        """The URL with any password replaced: safe for logs."""
        if self.kind == "sqlite":
            return f"sqlite://{self.path}"
        scheme = f"influxdb+v{self.version}{'s' if self.tls else ''}"
        auth = f"{self.username}:***@" if self.username else ""
        query = f"?rp={self.rp}" if self.rp else (f"?org={self.org}" if self.org else "")
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.database}{query}"


def _bad(url: str, why: str) -> StoreUrlError:
    shown = url if "@" not in url else url.split("://", 1)[0] + "://***@" + url.rsplit("@", 1)[1]
    return StoreUrlError(f"bad store URL {shown!r}: {why}; valid forms: " + ", ".join(VALID_FORMS))


def parse_store_url(url: str) -> StoreUrl:
    url = url.strip()
    if "://" not in url:
        raise _bad(url, "no scheme")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = url[len("sqlite://"):]
        if not path.startswith("/"):
            raise _bad(url, "the SQLite path must be absolute (three slashes: sqlite:///abs/path.db)")
        if path.endswith("/"):
            raise _bad(url, "the SQLite path names a directory, not a file")
        return StoreUrl(kind="sqlite", path=unquote(path))
    if scheme not in _INFLUX_SCHEMES:
        raise _bad(url, f"unknown scheme {scheme!r}")
    version, tls = _INFLUX_SCHEMES[scheme]
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:  # e.g. an unclosed or invalid IPv6 literal
        raise _bad(url, f"the host is not valid ({exc})") from None
    try:
        port = parts.port
    except ValueError:
        raise _bad(url, "the port is not a number between 1 and 65535") from None
    if not hostname:
        raise _bad(url, "no host")
    if port is None:
        raise _bad(url, "no port (InfluxDB listens on 8086 by default)")
    if port == 0:
        raise _bad(url, "the port is not a number between 1 and 65535")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise _bad(url, "the path must be one database (v1) or bucket (v2) name")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    allowed = {"rp"} if version == 1 else {"org"}
    unknown = set(query) - allowed
    if unknown:
        raise _bad(url, f"unknown query parameter {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(allowed))})")
    if version == 2 and not query.get("org"):
        raise _bad(url, "InfluxDB v2 URLs need ?org=ORG")
    return StoreUrl(
        kind="influxdb",
        version=version,
        tls=tls,
        host=hostname,
        port=port,
        database=database,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        rp=query.get("rp", ""),
        org=query.get("org", ""),
    )
