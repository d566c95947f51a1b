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


def serve(replies: list, chunk: int = 7):
    """A one-connection server that answers each command it receives with the next reply, sent
    in small chunks (a reply split across reads must still be parsed). It records how many
    commands it got."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    seen = []

    def run():
        conn, _addr = server.accept()
        with conn:
            answered = 0
            received = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                received += data
                while answered < received.count(b"*") and answered < len(replies):
                    reply = replies[answered]
                    answered += 1
                    seen[:] = [answered]  # before the reply: the client may check right after it
                    for i in range(0, len(reply), chunk):
                        conn.sendall(reply[i:i + chunk])
        server.close()

    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1], seen


def test_an_open_redis_reports_its_keys_and_the_other_anonymous_clients():
    port, _seen = serve([b"+PONG\r\n", b":9\r\n",
                         bulk("# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\ndb3:keys=1,expires=0\r\n"),
                         bulk(CLIENTS)])
    found = ask_redis(port)
    assert found["answered"] and found["anonymous"]
    assert found["keys"] == {"db0": 4, "db3": 1}
    # The celery user's client and the asking connection (id 9) are not anonymous clients.
    assert [c["addr"] for c in found["clients"]] == ["127.0.0.1:40412"]


def test_a_redis_with_a_password_is_not_anonymous_and_lists_nothing():
    port, seen = serve([b"-NOAUTH Authentication required.\r\n"] * 4)
    found = ask_redis(port)
    assert found["answered"] and not found["anonymous"]
    # Only the PING was sent: one NOAUTH in the server's error statistics, not four.
    assert seen == [1]
    assert found["clients"] == [] and found["keys"] == {}
    assert found["error"].startswith("NOAUTH")


def test_nothing_listening_is_not_an_error_of_the_module():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    found = ask_redis(port, timeout=1)
    assert not found["answered"] and not found["anonymous"] and found["error"]
