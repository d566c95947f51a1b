"""redis_client: redis-py options for an endpoint, INFO as text, the missing-library message."""

from __future__ import annotations

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils import redis_client
from ansible_collections.taskstack.celery.plugins.module_utils.redis_client import (
    AuthenticationError,
    Endpoint,
    ResponseError,
    client_options,
    config_get,
    flat_info,
    is_refused_login,
)


def test_unix_socket_wins_over_host_and_port():
    options = client_options(Endpoint(unix_socket="/run/redis/redis-server.sock", port=7000))
    assert options["unix_socket_path"] == "/run/redis/redis-server.sock"
    assert "host" not in options and "port" not in options and "ssl" not in options


def test_tls_checks_the_certificate_and_the_host_name():
    options = client_options(Endpoint(host="redis.example", port=6380, tls=True,
                                      tls_ca_file="/etc/ssl/ca.pem"))
    assert (options["host"], options["port"]) == ("redis.example", 6380)
    assert options["ssl"] is True and options["ssl_ca_certs"] == "/etc/ssl/ca.pem"
    assert options["ssl_cert_reqs"] == "required" and options["ssl_check_hostname"] is True


def test_credentials_go_to_the_client_and_never_into_the_endpoint_text():
    where = Endpoint(username="admin", password="s3cret", timeout=3)
    options = client_options(where)
    assert (options["username"], options["password"]) == ("admin", "s3cret")
    assert options["socket_timeout"] == 3 and options["decode_responses"] is True
    assert "s3cret" not in repr(where) and "s3cret" not in where.describe()
    assert where.without_auth().password is None and where.without_auth().username is None


class Parsed:
    """What redis-py's INFO parser returns: numbers as int/float, keyspace lines as dicts."""

    def info(self, section=None):
        return {"aof_enabled": 1, "rdb_last_bgsave_status": "ok", "mem_fragmentation_ratio": 1.5,
                "db0": {"keys": 3, "expires": 0}}

    def config_get(self, pattern):
        return {"maxmemory": "0"} if pattern == "maxmemory" else {}


def test_info_fields_come_back_as_the_text_redis_prints():
    assert flat_info(Parsed(), "persistence") == {
        "aof_enabled": "1", "rdb_last_bgsave_status": "ok", "mem_fragmentation_ratio": "1.5"}


def test_unknown_directive_is_none_not_an_empty_value():
    assert config_get(Parsed(), "maxmemory") == "0"
    assert config_get(Parsed(), "no-such-directive") is None


def test_refused_login_is_told_apart_from_other_errors():
    assert is_refused_login(AuthenticationError("invalid username-password pair"))
    assert is_refused_login(ResponseError("WRONGPASS invalid username-password pair"))
    assert not is_refused_login(ResponseError("NOPERM this user has no permissions"))
    assert not is_refused_login(ConnectionRefusedError(111, "Connection refused"))


class FakeModule:
    def fail_json(self, **kwargs):
        raise SystemExit(kwargs)


def test_missing_redis_py_fails_the_module_with_the_package_to_install(monkeypatch):
    monkeypatch.setattr(redis_client, "HAS_REDIS", False)
    monkeypatch.setattr(redis_client, "REDIS_IMPORT_ERROR", "ModuleNotFoundError: redis")
    with pytest.raises(SystemExit) as failed:
        redis_client.require_redis(FakeModule())
    assert "python3-redis" in failed.value.args[0]["msg"]
    assert failed.value.args[0]["exception"] == "ModuleNotFoundError: redis"
