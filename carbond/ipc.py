"""The daemon's socket protocol: versioned JSON lines over a Unix stream socket.

A request is one JSON object on one line: ``{"v": 1, "op": "status", ...}``. The reply
is one line: ``{"v": 1, "ok": true, "result": {...}}`` or
``{"v": 1, "ok": false, "error": "..."}``. Lines are limited to
:data:`MAX_MESSAGE_BYTES`; every op declares the fields it accepts and anything else is
rejected with an error reply. Shared by the server (daemon) and the clients (CLI,
``carbond.track``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from carbond.errors import CarbondError, DaemonUnavailableError

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024  # a request
MAX_REPLY_BYTES = 16 * MAX_MESSAGE_BYTES  # a reply (status with hundreds of active runs)


class ProtocolError(CarbondError):
    """A message that breaks the protocol; the server answers it with an error reply."""


@dataclass(frozen=True)
class Op:
    """One operation: the fields it accepts (name → type) and its handler."""

    fields: Mapping[str, type | tuple[type, ...]]
    handler: Callable[[dict[str, Any]], Any]
    required: tuple[str, ...] = ()


def encode(message: Mapping[str, Any], limit: int = MAX_MESSAGE_BYTES) -> bytes:
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    if len(data) > limit:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {limit}-byte limit")
    return data


def decode_request(line: bytes, ops: Mapping[str, Op]) -> tuple[Op, dict[str, Any]]:
    """Validate one request line against the known ops."""
    if len(line) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a request must be a JSON object")
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {msg.get('v')!r}; this daemon speaks {PROTOCOL_VERSION}")
    name = msg.get("op")
    if not isinstance(name, str) or name not in ops:
        raise ProtocolError(f"unknown op {name!r}; valid: {', '.join(sorted(ops))}")
    op = ops[name]
    args = {k: v for k, v in msg.items() if k not in ("v", "op")}
    unknown = sorted(set(args) - set(op.fields))
    if unknown:
        raise ProtocolError(f"op {name!r}: unknown field {unknown[0]!r}; accepted: {', '.join(sorted(op.fields)) or 'none'}")
    for key, typ in op.fields.items():
        if key in args and (not isinstance(args[key], typ) or (typ in (int, float) and isinstance(args[key], bool))):
            raise ProtocolError(f"op {name!r}: field {key!r} has the wrong type")
    missing = [k for k in op.required if k not in args]
    if missing:
        raise ProtocolError(f"op {name!r}: missing field {missing[0]!r}")
    return op, args


def reply_ok(result: Any) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "ok": True, "result": result}, MAX_REPLY_BYTES)


def reply_error(message: str) -> bytes:
    return encode({"v": PROTOCOL_VERSION, "ok": False, "error": message[:2000]})


def read_line(fh: BinaryIO, limit: int = MAX_MESSAGE_BYTES) -> bytes | None:
    """One line from a buffered socket file (without the newline); None at EOF.

    Raises :class:`ProtocolError` for a line longer than ``limit``.
    """
    line = fh.readline(limit + 1)
    if not line:
        return None
    if line.endswith(b"\n"):
        return line[:-1]
    if len(line) > limit:
        raise ProtocolError(f"message exceeds the {limit}-byte limit")
    return line  # EOF without a final newline


def request(path: str, op: str, timeout_s: float = 5.0, **fields: Any) -> Any:
    """Send one request to the daemon and return its result; raises on an error reply."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            sock.sendall(encode({"v": PROTOCOL_VERSION, "op": op, **fields}))
            with sock.makefile("rb") as fh:
                line = read_line(fh, limit=MAX_REPLY_BYTES)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonUnavailableError(f"no carbond daemon on {path} (start one with `carbond run`)") from exc
    except OSError as exc:
        raise DaemonUnavailableError(f"carbond daemon on {path} did not answer: {exc}") from exc
    if line is None:
        raise DaemonUnavailableError(f"carbond daemon on {path} closed the connection without a reply")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ProtocolError(f"daemon refused {op!r}: {reply.get('error')}")
    return reply.get("result")
