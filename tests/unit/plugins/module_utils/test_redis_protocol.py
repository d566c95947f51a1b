"""The RESP client the modules use: encoding, reply parsing, and a real socket round trip."""

from __future__ import annotations

import io
import socket
import threading

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils.redis_protocol import (
    Endpoint,
    ProtocolError,
    RedisConnection,
    RedisError,
    ReplyReader,
    encode_command,
    parse_config_get,
    parse_info,
)


def read(data: bytes):
    return ReplyReader(io.BytesIO(data)).read()


def test_command_is_encoded_as_an_array_of_bulk_strings():
    assert encode_command("SET", "k", 12) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"


def test_non_ascii_argument_is_counted_in_bytes_not_characters():
    assert encode_command("ECHO", "é") == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"


def test_boolean_argument_is_refused_rather_than_sent_as_true():
    with pytest.raises(TypeError):
        encode_command("CONFIG", "SET", "appendonly", True)


def test_empty_command_is_refused():
    with pytest.raises(ValueError):
        encode_command()


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"+OK\r\n", "OK"),
        (b":42\r\n", 42),
        (b"$5\r\nhello\r\n", b"hello"),
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"*2\r\n$1\r\na\r\n:1\r\n", [b"a", 1]),
        (b"*2\r\n*1\r\n+x\r\n$-1\r\n", [["x"], None]),
    ],
)
def test_replies_are_decoded(wire, expected):
    assert read(wire) == expected


def test_bulk_string_may_contain_crlf():
    assert read(b"$4\r\na\r\nb\r\n") == b"a\r\nb"


def test_error_reply_raises_with_the_server_message():
    with pytest.raises(RedisError, match="NOPERM"):
        read(b"-NOPERM this user has no permissions to run the 'flushall' command\r\n")


@pytest.mark.parametrize("wire", [b"$5\r\nhel", b"?1\r\n", b"+OK\n"])
def test_malformed_reply_raises_protocol_error(wire):
    with pytest.raises(ProtocolError):
        read(wire)


def test_closed_connection_is_not_mistaken_for_an_empty_reply():
    with pytest.raises(ConnectionError):
        read(b"")


INFO = (
    "# Persistence\r\n"
    "loading:0\r\n"
    "aof_enabled:1\r\n"
    "aof_rewrite_in_progress:0\r\n"
    "aof_rewrite_scheduled:1\r\n"
    "aof_last_bgrewrite_status:ok\r\n"
    "\r\n"
    "# Keyspace\r\n"
    "db0:keys=3,expires=0,avg_ttl=0\r\n"
)


def test_info_fields_are_flattened_and_section_headers_dropped():
    info = parse_info(INFO)
    assert info["aof_enabled"] == "1"
    assert info["aof_rewrite_scheduled"] == "1"
    assert info["aof_last_bgrewrite_status"] == "ok"
    assert info["db0"] == "keys=3,expires=0,avg_ttl=0"
    assert not any(k.startswith("#") for k in info)


def test_info_accepts_the_bulk_bytes_the_server_sends():
    assert parse_info(INFO.encode())["loading"] == "0"


def test_config_get_pairs_become_a_dict():
    assert parse_config_get([b"appendonly", b"yes", b"save", b"900 1"]) == {
        "appendonly": "yes",
        "save": "900 1",
    }


def test_config_get_with_odd_item_count_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        parse_config_get([b"appendonly"])


class FakeRedis:
    """A one-connection server that records what it receives and answers from a script."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.received = b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            for answer in self.answers:
                self.received += conn.recv(65536)
                conn.sendall(answer)
        self.listener.close()


def test_connection_authenticates_as_the_acl_user_before_the_first_command():
    body = b"# Server\r\nloading:0\r\n"
    server = FakeRedis([b"+OK\r\n", b"$%d\r\n%s\r\n" % (len(body), body)])
    ep = Endpoint(port=server.port, username="admin", password="s3cret")
    with RedisConnection(ep) as conn:
        assert conn.info() == {"loading": "0"}
    server.thread.join(5)
    assert server.received.startswith(encode_command("AUTH", "admin", "s3cret"))
    assert server.received.endswith(encode_command("INFO"))


def test_wrong_password_is_reported_as_a_redis_error():
    server = FakeRedis([b"-WRONGPASS invalid username-password pair\r\n"])
    with pytest.raises(RedisError, match="WRONGPASS"):
        RedisConnection(Endpoint(port=server.port, username="x", password="y")).connect()
