"""With redis_tls the port serves TLS only: a TLS client with the CA works as the celery user,
a plaintext one is refused; converging back restores plaintext on loopback."""

from __future__ import annotations

import redis
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


def test_tls_port_serves_tls_only_and_the_celery_user_works_over_it(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text(make_certificate())
    run = run_playbook(extra_vars={"redis_tls": True})
    assert run.rc == 0, run.output[-3000:]
    try:
        tls = redis.Redis(host="127.0.0.1", port=6379, ssl=True, ssl_ca_certs=str(ca), username="celery",
                          password=password("redis_celery_password"), socket_timeout=5)
        wait_ready(tls)
        tls.delete("taskstack:test:tls")
        assert tls.rpush("taskstack:test:tls", "x") == 1
        assert tls.connection_pool.connection_kwargs.get("ssl_ca_certs") == str(ca)
        tls.delete("taskstack:test:tls")
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
