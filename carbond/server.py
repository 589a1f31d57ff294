"""The daemon's Unix socket server: a blocking accept loop, one thread per connection.

Idle, it costs nothing: no polling (``socketserver`` wakes twice a second to poll for
shutdown; here ``close`` shuts the listening socket down, which ends ``accept``).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from carbond import ipc
from carbond.errors import CarbondError, UsageError

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_S = 30.0  # an idle client is disconnected
SOCKET_GROUP = "carbond"  # members may talk to the daemon (deploy/systemd/carbond.sysusers creates it)


def _give_to_group(path: str, group: str) -> None:
    """Hand the socket to ``group`` when it exists (and we may): mode 0660 then admits its members."""
    import grp

    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return
    try:
        os.chown(path, -1, gid)
    except OSError as exc:
        log.warning("socket %s: could not give it to group %s (%s); only its owner can connect", path, group, exc)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the client, from SO_PEERCRED."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        return pid, uid, gid
    except OSError:
        return -1, -1, -1


def handle_connection(conn: socket.socket, ops: Mapping[str, ipc.Op]) -> None:
    """Answer request lines until the client closes, times out or breaks the size limit."""
    conn.settimeout(CLIENT_TIMEOUT_S)
    peer = peer_credentials(conn)
    with conn, conn.makefile("rb") as rfile:
        while True:
            try:
                line = ipc.read_line(rfile)
            except ipc.ProtocolError as exc:
                _send(conn, ipc.reply_error(str(exc)))
                return  # the rest of an oversize line cannot be resynchronised
            except OSError:
                return
            if line is None:
                return
            if not line.strip():
                continue
            try:
                op, args = ipc.decode_request(line, ops)
                args["_peer"] = peer
                reply = ipc.reply_ok(op.handler(args))
            except (ipc.ProtocolError, CarbondError, ValueError) as exc:
                reply = ipc.reply_error(str(exc))
            except Exception as exc:  # a bug in a handler must not take the daemon down
                log.exception("socket request failed")
                reply = ipc.reply_error(f"internal error: {type(exc).__name__}")
            if not _send(conn, reply):
                return


def _send(conn: socket.socket, data: bytes) -> bool:
    try:
        conn.sendall(data)
        return True
    except OSError:
        return False


class SocketServer:
    """Listens on ``path`` in a background thread until ``close``."""

    def __init__(self, path: str, ops: Mapping[str, ipc.Op]) -> None:
        self.path = path
        self._ops = ops
        sock_path = Path(path)
        try:
            sock_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"socket {path}: cannot create {sock_path.parent}: {exc.strerror}") from exc
        if sock_path.exists() or sock_path.is_socket():
            if _answers(path):
                raise CarbondError(f"another carbond daemon is already listening on {path}")
            sock_path.unlink()  # a stale socket left by a daemon that died
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(path)
            os.chmod(path, 0o660)
            _give_to_group(path, SOCKET_GROUP)
            self._sock.listen(64)
        except OSError as exc:
            self._sock.close()
            raise UsageError(f"socket {path}: cannot listen: {exc.strerror}") from exc
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="carbond-socket", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closed:
                    return
                time.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            threading.Thread(target=handle_connection, args=(conn, self._ops), name="carbond-client",
                             daemon=True).start()

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocking accept()
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)
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
