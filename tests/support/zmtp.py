"""A hand-written ZMTP 3.0 client (NULL mechanism, DEALER) over a unix socket.

libzmq's own sockets never let a program choose its handshake metadata freely; this
one sends whatever properties it is given, a forged "User-Id" included, to prove that
virnucd trusts only the identity its ZAP handler sets (RFC 23, ZMTP 3.0).

No virnuc or pyzmq import: a test user can run it with nothing but this file.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

MORE, LONG, COMMAND = 0x01, 0x02, 0x04


class ZmtpError(Exception):
    """The peer closed the connection or sent an ERROR command (ZAP refused us)."""


def greeting() -> bytes:
    """Signature, version 3.0, mechanism NULL, as-server 0, filler: 64 bytes."""
    mechanism = b"NULL".ljust(20, b"\0")
    return b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + mechanism + b"\x00" + b"\0" * 31


def command(name: bytes, body: bytes) -> bytes:
    return frame(bytes([len(name)]) + name + body, COMMAND)


def properties(values: dict[str, bytes]) -> bytes:
    out = b""
    for name, value in values.items():
        out += bytes([len(name)]) + name.encode() + struct.pack(">I", len(value)) + value
    return out


def frame(body: bytes, flags: int = 0) -> bytes:
    if len(body) > 255:
        return bytes([flags | LONG]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


class RawDealer:
    """One DEALER connection, speaking ZMTP by hand."""

    def __init__(self, path: str, metadata: dict[str, bytes], timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self.sock.sendall(greeting())
            self._read_exactly(64)  # the server's greeting
            ready = {"Socket-Type": b"DEALER", **metadata}
            self.sock.sendall(command(b"READY", properties(ready)))
            self._expect_ready()
        except BaseException:
            self.sock.close()
            raise

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send [empty delimiter, msgpack(message)]; the reply's last frame, decoded."""
        self.sock.sendall(frame(b"", MORE) + frame(msgpack.packb(message)))
        parts: list[bytes] = []
        while True:
            flags, body = self._read_frame()
            if flags & COMMAND:
                continue  # PING and the like
            parts.append(body)
            if not flags & MORE:
                return msgpack.unpackb(parts[-1])  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()

    def _expect_ready(self) -> None:
        flags, body = self._read_frame()
        name = body[1 : 1 + body[0]] if body else b""
        if not flags & COMMAND or name != b"READY":
            raise ZmtpError(f"handshake refused: {body[1:]!r}")

    def _read_frame(self) -> tuple[int, bytes]:
        flags = self._read_exactly(1)[0]
        if flags & LONG:
            size = struct.unpack(">Q", self._read_exactly(8))[0]
        else:
            size = self._read_exactly(1)[0]
        return flags, self._read_exactly(size)

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ZmtpError("the server closed the connection")
            data += chunk
        return data
