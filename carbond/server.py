"""The daemon's Unix socket server: one thread per connection, JSON lines, ops from a table."""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
from collections.abc import Mapping
from pathlib import Path

from carbond import ipc
from carbond.errors import CarbondError, UsageError

log = logging.getLogger(__name__)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    timeout = 30.0  # an idle client is disconnected

    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            try:
                line = ipc.read_line(self.rfile)
            except ipc.ProtocolError as exc:
                self._send(ipc.reply_error(str(exc)))
                return  # the rest of an oversize line cannot be resynchronised
            except OSError:
                return
            if line is None:
                return
            if not line.strip():
                continue
            try:
                op, args = ipc.decode_request(line, self.server.ops)
                args["_peer"] = self._peer(sock)
                reply = ipc.reply_ok(op.handler(args))
            except (ipc.ProtocolError, CarbondError, ValueError) as exc:
                reply = ipc.reply_error(str(exc))
            except Exception as exc:  # a bug in a handler must not take the daemon down
                log.exception("socket request failed")
                reply = ipc.reply_error(f"internal error: {type(exc).__name__}")
            if not self._send(reply):
                return

    def _send(self, data: bytes) -> bool:
        try:
            self.request.sendall(data)
            return True
        except OSError:
            return False

    @staticmethod
    def _peer(sock: socket.socket) -> tuple[int, int, int]:
        """(pid, uid, gid) of the client, from SO_PEERCRED."""
        import struct

        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, gid = struct.unpack("3i", creds)
            return pid, uid, gid
        except OSError:
            return -1, -1, -1


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    ops: Mapping[str, ipc.Op]


class SocketServer:
    """Listens on ``path`` in a background thread until ``close``."""

    def __init__(self, path: str, ops: Mapping[str, ipc.Op]) -> None:
        self.path = path
        sock_path = Path(path)
        try:
            sock_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"socket {path}: cannot create {sock_path.parent}: {exc.strerror}") from exc
        if sock_path.exists() or sock_path.is_socket():
            if _answers(path):
                raise CarbondError(f"another carbond daemon is already listening on {path}")
            sock_path.unlink()  # a stale socket left by a daemon that died
        try:
            self._server = _Server(path, _Handler)
        except OSError as exc:
            raise UsageError(f"socket {path}: cannot listen: {exc.strerror}") from exc
        self._server.ops = ops
        os.chmod(path, 0o660)
        self._thread = threading.Thread(target=self._server.serve_forever, name="carbond-socket", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(path)
        return True
    except OSError:
        return False
