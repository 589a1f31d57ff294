"""Write errors of remote stores, classified once at the boundary.

Every HTTP status, transport failure and vendor exception of a remote store becomes one
:class:`WriteError` subclass whose ``action`` tells the delivery what to do with the batch:

- ``retry``: 429, 5xx (and 408), connection refused/reset, timeouts, TLS hiccups — back
  off (honouring ``retry_after_s``) and send the same batch again (writes are idempotent:
  same series and timestamp overwrite);
- ``split``: 413 — the batch is too large; send halves;
- ``reject``: every other 4xx (field type conflict 400, 401/403, 404 database not found,
  422) — sending it again cannot help; the batch goes to the dead-letter file.

The original exception stays as ``__cause__``. Messages never include credentials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import ClassVar

from carbond.errors import StoreError
from carbond.httputil import retry_after_s


class WriteError(StoreError):
    """A store write that failed; ``action`` is ``retry``, ``split`` or ``reject``."""

    action: ClassVar[str] = "retry"

    def __init__(self, message: str, *, status: int | None = None, reason: str = "", retry_after_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason or self.action
        self.retry_after_s = retry_after_s


class RetryableWriteError(WriteError):
    """Transient: the server is down, overloaded or rate limiting. Back off and retry."""

    action = "retry"


class BatchTooLargeError(WriteError):
    """413: split the batch and send the halves."""

    action = "split"


class RejectedWriteError(WriteError):
    """The server refused the data itself or the credentials: retrying cannot help."""

    action = "reject"


class DatabaseNotFoundError(RejectedWriteError):
    """404 database (or bucket) not found; the delivery may create it when told to."""


def server_message(body: bytes | str | None, headers: Mapping[str, str] | None = None) -> str:
    """The error text of an InfluxDB answer: ``{"error": ...}``, ``{"message": ...}`` or the header."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        doc = json.loads(text)
        if isinstance(doc, dict):
            for key in ("error", "message"):
                if doc.get(key):
                    return str(doc[key])
    except ValueError:
        pass
    if headers is not None:
        for key in ("X-Influxdb-Error", "x-influxdb-error"):
            if headers.get(key):
                return str(headers[key])
    return " ".join(text.split())[:300]


def classify_status(status: int, message: str, where: str, headers: Mapping[str, str] | None = None) -> WriteError:
    """The :class:`WriteError` for a non-2xx HTTP answer to a write. ``where`` is the redacted URL."""
    after = retry_after_s(headers.get("Retry-After") if headers else None)
    text = f"{where}: HTTP {status}: {message}" if message else f"{where}: HTTP {status}"
    if status == 413:
        return BatchTooLargeError(text, status=status, reason="too_large")
    if status == 429:
        return RetryableWriteError(text, status=status, reason="rate_limited", retry_after_s=after)
    if status == 408 or status >= 500:
        return RetryableWriteError(text, status=status, reason="server_error", retry_after_s=after)
    lowered = message.lower()
    if status == 404 and ("database not found" in lowered or "bucket" in lowered or not message):
        return DatabaseNotFoundError(text, status=status, reason="database_not_found")
    if status == 401:
        return RejectedWriteError(text, status=status, reason="unauthorized")
    if status == 403:
        return RejectedWriteError(text, status=status, reason="forbidden")
    if "field type conflict" in lowered:
        return RejectedWriteError(text, status=status, reason="type_conflict")
    return RejectedWriteError(text, status=status, reason="bad_request" if status == 400 else f"http_{status}")


def classify_transport(exc: BaseException, where: str) -> WriteError:
    """Connection refused/reset, DNS, TLS and timeouts: all retryable."""
    name = type(exc).__name__
    reason = "timeout" if "Timeout" in name or isinstance(exc, TimeoutError) else "connection"
    detail = str(exc)
    # urllib3 messages can embed the request URL; ours never carries credentials (Basic/Token headers).
    return RetryableWriteError(f"{where}: {reason}: {name}: {detail}"[:500], reason=reason)
