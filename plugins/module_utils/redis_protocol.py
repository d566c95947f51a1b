# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A minimal Redis client (RESP2) for modules that run on managed hosts.

Why not redis-py: the target hosts of this collection need nothing but python3; the roles
talk to the local Redis with a handful of commands (AUTH, INFO, CONFIG, ACL, BGREWRITEAOF),
and a password must never travel on a command line (redis-cli -a would put it there).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Optional, Union

Reply = Union[None, int, bytes, str, list]

CRLF = b"\r\n"


class RedisError(Exception):
    """The server answered with an error reply (-ERR ..., -NOPERM ..., -WRONGPASS ...)."""


class ProtocolError(Exception):
    """The server's bytes are not a well-formed RESP2 reply."""


def encode_command(*args: Union[str, bytes, int, float]) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    if not args:
        raise ValueError("a command needs at least its name")
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, bool):
            raise TypeError("booleans have no Redis encoding; pass 'yes'/'no'")
        else:
            data = str(arg).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class ReplyReader:
    """Parse RESP2 replies from a binary file-like object (socket.makefile('rb'))."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def _line(self) -> bytes:
        line = self._stream.readline()
        if not line:
            raise ConnectionError("connection closed by the server")
        if not line.endswith(CRLF):
            raise ProtocolError("reply line not terminated by CRLF: %r" % line[:80])
        return line[:-2]

    def read(self) -> Reply:
        """Read one reply. Error replies are raised as RedisError."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            raise RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            data = self._stream.read(length + 2)
            if len(data) != length + 2 or not data.endswith(CRLF):
                raise ProtocolError("truncated bulk string")
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self.read() for _ in range(count)]
        raise ProtocolError("unknown reply type %r" % kind)


def parse_info(text: Union[str, bytes]) -> dict[str, str]:
    """Turn the text of INFO into a flat {field: value} dict (sections dropped)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    info: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep:
            info[key] = value
    return info


def parse_config_get(reply: list) -> dict[str, str]:
    """Turn the flat [name, value, name, value, ...] reply of CONFIG GET into a dict."""
    if len(reply) % 2:
        raise ProtocolError("CONFIG GET returned an odd number of items")
    items = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in reply]
    return dict(zip(items[::2], items[1::2]))


@dataclass
class Endpoint:
    """Where and as whom to connect. Either unix_socket, or host and port."""

    host: str = "127.0.0.1"
    port: int = 6379
    unix_socket: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = None
    tls: bool = False
    tls_ca_file: Optional[str] = None
    timeout: float = 10.0


class RedisConnection:
    """One blocking connection; authenticates on connect when a password is set."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._sock: Optional[socket.socket] = None
        self._reader: Optional[ReplyReader] = None

    def connect(self) -> "RedisConnection":
        ep = self.endpoint
        if ep.unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(ep.timeout)
            sock.connect(ep.unix_socket)
        else:
            sock = socket.create_connection((ep.host, ep.port), timeout=ep.timeout)
            if ep.tls:
                context = ssl.create_default_context(cafile=ep.tls_ca_file)
                sock = context.wrap_socket(sock, server_hostname=ep.host)
        self._sock = sock
        self._reader = ReplyReader(sock.makefile("rb"))
        if ep.password is not None:
            if ep.username:
                self.execute("AUTH", ep.username, ep.password)
            else:
                self.execute("AUTH", ep.password)
        return self

    def execute(self, *args: Union[str, bytes, int, float]) -> Reply:
        if self._sock is None or self._reader is None:
            raise ConnectionError("not connected")
        self._sock.sendall(encode_command(*args))
        return self._reader.read()

    def info(self, section: Optional[str] = None) -> dict[str, str]:
        reply = self.execute("INFO", section) if section else self.execute("INFO")
        return parse_info(reply if reply is not None else b"")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._reader = None

    def __enter__(self) -> "RedisConnection":
        return self.connect()

    def __exit__(self, *exc_info) -> None:
        self.close()
