"""celery_adopt_facts asks a Redis without credentials over a real socket: a fake server that
answers as Redis 7.0 does, with and without a password set."""

from __future__ import annotations

import socket
import threading

from ansible_collections.taskstack.celery.plugins.modules.celery_adopt_facts import ask_redis

CLIENTS = ("id=3 addr=127.0.0.1:40412 laddr=127.0.0.1:6384 fd=8 name= age=120 idle=0 cmd=brpop user=default\n"
           "id=7 addr=127.0.0.1:40500 laddr=127.0.0.1:6384 fd=9 name=web age=3 idle=3 cmd=lpush user=celery\n"
           "id=9 addr=127.0.0.1:40600 laddr=127.0.0.1:6384 fd=10 name= age=0 idle=0 cmd=client|list user=default\n")


def bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def serve(replies: bytes, chunk: int = 7):
    """A one-connection server that reads the four commands, then sends `replies` in small
    chunks (a reply split across reads must still be parsed)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def run():
        conn, _addr = server.accept()
        with conn:
            received = b""
            while received.count(b"*") < 4:
                received += conn.recv(4096)
            for i in range(0, len(replies), chunk):
                conn.sendall(replies[i:i + chunk])
        server.close()

    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1]


def test_an_open_redis_reports_its_keys_and_the_other_anonymous_clients():
    port = serve(b"+PONG\r\n:9\r\n" + bulk("# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\ndb3:keys=1,expires=0\r\n")
                 + bulk(CLIENTS))
    found = ask_redis(port)
    assert found["answered"] and found["anonymous"]
    assert found["keys"] == {"db0": 4, "db3": 1}
    # The celery user's client and the asking connection (id 9) are not anonymous clients.
    assert [c["addr"] for c in found["clients"]] == ["127.0.0.1:40412"]


def test_a_redis_with_a_password_is_not_anonymous_and_lists_nothing():
    noauth = b"-NOAUTH Authentication required.\r\n"
    found = ask_redis(serve(noauth * 4))
    assert found["answered"] and not found["anonymous"]
    assert found["clients"] == [] and found["keys"] == {}
    assert found["error"].startswith("NOAUTH")


def test_nothing_listening_is_not_an_error_of_the_module():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    found = ask_redis(port, timeout=1)
    assert not found["answered"] and not found["anonymous"] and found["error"]
