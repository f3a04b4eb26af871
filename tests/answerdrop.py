"""A TCP proxy in front of one ZooKeeper server that can lose a write's answer.

Armed, it lets the next write request (create, delete, setData, multi) reach the server, and
when the server's answer to it comes back it closes both connections instead of passing it on:
the server applied the write, the client saw only a dropped connection, as when a network cuts
between a request and its answer. The client reconnects (through the proxy again) on the same
session and sends the write again. Everything else is passed through untouched.

ZooKeeper's wire format: every packet is a 4-byte big-endian length and a body. After the
connect packets, a request's body starts with its xid and operation code, and an answer's
with the xid it answers.
"""
from __future__ import annotations

import socket
import struct
import threading

WRITES = {1: "create", 2: "delete", 5: "setData", 14: "multi", 15: "create2"}


class AnswerDropper:
    """proxy = AnswerDropper(("127.0.0.1", port)); connect clients to proxy.hosts."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.hosts = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._armed = threading.Event()
        self.dropped: list[str] = []          # the writes whose answer was lost
        self._closed = False
        self._refusing = False
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="answerdrop").start()

    def arm(self) -> None:
        """Lose the answer of the next write request."""
        self._armed.set()

    def cut(self) -> None:
        """The link goes down: every connection ends and new ones are refused (the
        sessions live on in the server until their timeout)."""
        self._refusing = True
        open_, self._open = self._open, []
        _shut(*open_)

    def restore(self) -> None:
        """The link is back."""
        self._refusing = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()

    # ------------------------------------------------------------------ plumbing
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._refusing:
                _shut(client)
                continue
            server = socket.create_connection(self.server)
            self._open += [client, server]
            doomed: dict[int, str] = {}   # xid -> write, for this connection
            threading.Thread(target=self._requests, args=(client, server, doomed),
                             daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client, doomed),
                             daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket,
                  doomed: dict[int, str]) -> None:
        first = True
        for packet in _packets(client):
            if not first and len(packet) >= 12 and self._armed.is_set():
                xid, op = struct.unpack(">ii", packet[4:12])
                if op in WRITES and xid > 0:
                    self._armed.clear()
                    doomed[xid] = WRITES[op]
            first = False
            if not _send(server, packet):
                break
        _shut(client, server)

    def _answers(self, server: socket.socket, client: socket.socket,
                 doomed: dict[int, str]) -> None:
        first = True
        for packet in _packets(server):
            if not first and len(packet) >= 8:
                xid = struct.unpack(">i", packet[4:8])[0]
                if xid in doomed:
                    self.dropped.append(doomed.pop(xid))
                    break
            first = False
            if not _send(client, packet):
                break
        _shut(client, server)


def _packets(sock: socket.socket):  # type: ignore[no-untyped-def]
    """Each whole packet (length prefix included) until the connection ends."""
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        buf += chunk
        while len(buf) >= 4:
            size = struct.unpack(">i", buf[:4])[0]
            if len(buf) < 4 + size:
                break
            yield buf[:4 + size]
            buf = buf[4 + size:]


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _shut(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
