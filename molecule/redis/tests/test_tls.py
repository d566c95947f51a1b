"""With redis_tls the port serves TLS only: a TLS client with the CA works as the celery user,
a plaintext one is refused; converging back restores plaintext on loopback."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from conftest import client, docker_exec, password, run_playbook, sh, wait_ready

TLS_DIR = "/etc/redis/tls"


def make_certificate() -> str:
    sh(f"""set -e
mkdir -p {TLS_DIR}
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout {TLS_DIR}/redis.key -out {TLS_DIR}/redis.crt 2>/dev/null
cp {TLS_DIR}/redis.crt {TLS_DIR}/ca.crt
chown -R root:redis {TLS_DIR}; chmod 0750 {TLS_DIR}; chmod 0640 {TLS_DIR}/*
""")
    return docker_exec("cat", f"{TLS_DIR}/ca.crt").stdout


def other_certificate() -> str:
    """A self-signed certificate for the same address that did not sign the server's."""
    return sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
              "-addext subjectAltName=IP:127.0.0.1 -keyout /dev/null -out /dev/stdout 2>/dev/null")


def tls_client(ca: Path) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=6379, ssl=True, ssl_ca_certs=str(ca), username="celery",
                       password=password("redis_celery_password"), socket_timeout=5,
                       retry=Retry(NoBackoff(), 0))


def presented_certificate() -> bytes:
    """The certificate the server presents on its port (DER), read without verifying it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", 6379), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def test_tls_port_serves_tls_only_and_the_celery_user_works_over_it(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text(make_certificate())
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_text(other_certificate())
    run = run_playbook(extra_vars={"redis_tls": True})
    assert run.rc == 0, run.output[-3000:]
    try:
        tls = tls_client(ca)
        wait_ready(tls)
        tls.delete("taskstack:test:tls")
        assert tls.rpush("taskstack:test:tls", "x") == 1
        tls.delete("taskstack:test:tls")
        # The server presents the certificate the role was given, and the client verifies it:
        # the same client trusting a CA that did not sign it is refused.
        assert presented_certificate() == ssl.PEM_cert_to_DER_cert(ca.read_text())
        try:
            tls_client(other_ca).ping()
            raise AssertionError("a client trusting another CA was accepted: the server is not verified")
        except redis.ConnectionError as exc:
            print(f"TLS client trusting another CA: {exc}")
            assert "certificate verify failed" in str(exc)
        plain = client("celery")
        try:
            plain.ping()
            raise AssertionError("plaintext accepted on the TLS port")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            print(f"plaintext client on the TLS port: {type(exc).__name__}")
    finally:
        back = run_playbook()
        assert back.rc == 0, back.output[-3000:]
    wait_ready(client("admin"))
    assert client("admin").config_get("tls-port")["tls-port"] == "0"
