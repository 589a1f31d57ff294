"""HTTP for the live intensity providers: JSON GETs with timeouts, errors mapped once.

urllib3 (already a dependency of influxdb-client) is imported on first use, so that merely
configuring a provider costs nothing. urllib3's own retries are off: the providers back off
themselves (:class:`carbond.intensity.live.Backoff`), honouring ``Retry-After``. Error
messages never contain headers, so tokens and passwords stay out of logs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from carbond import __version__
from carbond.errors import CarbondError
from carbond.httputil import retry_after_s


class ProviderError(CarbondError):
    """A live intensity provider failed; the daemon keeps ticking on the table."""


class ProviderAuthError(ProviderError):
    """401/403: the key, token or password is wrong or lacks access."""


class ProviderRateLimitedError(ProviderError):
    """429: too many requests; ``retry_after_s`` is the server's ``Retry-After`` when it sent one."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ProviderUnavailableError(ProviderError):
    """5xx, timeout or connection failure."""


class ProviderBadResponseError(ProviderError):
    """A response that is not the JSON shape the API documents."""


class HttpClient:
    """GET JSON with a connect and read timeout. One pool per client, safe across threads."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._pool: Any = None
        self._lock = threading.Lock()

    def _manager(self) -> Any:
        with self._lock:
            if self._pool is None:
                import urllib3

                self._pool = urllib3.PoolManager(
                    retries=False, timeout=urllib3.Timeout(connect=self.timeout_s, read=self.timeout_s),
                    headers={"User-Agent": f"carbond/{__version__}", "Accept": "application/json"},
                )
            return self._pool

    def get_json(self, url: str, *, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                 basic_auth: tuple[str, str] | None = None, what: str = "request") -> Any:
        """The decoded JSON body of a 2xx answer; a :class:`ProviderError` subclass otherwise."""
        import urllib3

        full = f"{url}?{urlencode(params)}" if params else url
        hdrs = dict(headers or {})
        if basic_auth is not None:
            hdrs.update(urllib3.make_headers(basic_auth=f"{basic_auth[0]}:{basic_auth[1]}"))
        try:
            resp = self._manager().request("GET", full, headers=hdrs)
        except urllib3.exceptions.TimeoutError as exc:
            raise ProviderUnavailableError(f"{what}: no answer within {self.timeout_s:g}s") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ProviderUnavailableError(f"{what}: {type(exc).__name__}: {_reason(exc)}") from exc
        status = resp.status
        if status in (401, 403):
            raise ProviderAuthError(f"{what}: HTTP {status} (check the API key or credentials)")
        if status == 429:
            retry = retry_after_s(resp.headers.get("Retry-After"))
            hint = f"; retry after {retry:g}s" if retry is not None else ""
            raise ProviderRateLimitedError(f"{what}: HTTP 429 rate limited{hint}", retry)
        if status >= 500:
            raise ProviderUnavailableError(f"{what}: HTTP {status}")
        if not 200 <= status < 300:
            raise ProviderBadResponseError(f"{what}: HTTP {status}: {_snippet(resp.data)}")
        try:
            return json.loads(resp.data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProviderBadResponseError(f"{what}: not JSON: {_snippet(resp.data)}") from exc

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.clear()
                self._pool = None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).split(": ", 1)[-1][:200]


def _snippet(body: bytes) -> str:
    text = body[:120].decode("utf-8", "replace").replace("\n", " ")
    return repr(text + ("…" if len(body) > 120 else ""))


def parse_time_utc(value: Any, what: str) -> datetime:
    """An ISO 8601 timestamp from an API (``Z`` or offset; naive = UTC) → aware UTC datetime."""
    if not isinstance(value, str):
        raise ProviderBadResponseError(f"{what}: expected an ISO 8601 time, got {value!r}")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ProviderBadResponseError(f"{what}: {value!r} is not an ISO 8601 time") from exc
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        raise ProviderBadResponseError(f"{what}: expected a non-negative number, got {value!r}")
    return float(value)
