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
    endpoint_from_params,
    flat_info,
    is_refused_login,
    login_argument_spec,
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


def test_database_number_reaches_the_client_and_survives_without_auth():
    where = Endpoint(host="redis.example", username="admin", password="s3cret", db=2)
    assert client_options(where)["db"] == 2 and client_options(Endpoint())["db"] == 0
    assert where.without_auth().db == 2
    assert where.describe() == "redis.example:6379 db 2 as admin"


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


# INFO persistence as Redis 7.0.15 (Debian 12) sent it, recorded with redis-cli.
RECORDED_INFO_PERSISTENCE = "\r\n".join([
    "# Persistence", "loading:0", "async_loading:0", "current_cow_peak:0",
    "current_fork_perc:0.00", "rdb_changes_since_last_save:0", "rdb_bgsave_in_progress:0",
    "rdb_last_save_time:1796039938", "rdb_last_bgsave_status:ok", "rdb_last_bgsave_time_sec:-1",
    "aof_enabled:0", "aof_rewrite_in_progress:0", "aof_rewrite_scheduled:0",
    "aof_last_rewrite_time_sec:-1", "aof_last_bgrewrite_status:ok", "aof_last_write_status:ok",
    "module_fork_in_progress:0", ""])


def test_recorded_info_through_redis_py_s_own_parser_reads_as_the_server_wrote_it():
    pytest.importorskip("redis")
    try:
        from redis._parsers.helpers import parse_info  # redis-py 5 and newer
    except ImportError:
        from redis.client import parse_info  # redis-py 4 (Debian 12)

    class Recorded:
        def info(self, section=None):
            return parse_info(RECORDED_INFO_PERSISTENCE)

    info = flat_info(Recorded(), "persistence")
    assert {k: info[k] for k in ("aof_enabled", "aof_rewrite_in_progress", "aof_rewrite_scheduled",
                                 "rdb_bgsave_in_progress", "rdb_last_save_time",
                                 "rdb_last_bgsave_status", "aof_last_bgrewrite_status",
                                 "aof_last_rewrite_time_sec")} == {
        "aof_enabled": "0", "aof_rewrite_in_progress": "0", "aof_rewrite_scheduled": "0",
        "rdb_bgsave_in_progress": "0", "rdb_last_save_time": "1796039938",
        "rdb_last_bgsave_status": "ok", "aof_last_bgrewrite_status": "ok",
        "aof_last_rewrite_time_sec": "-1"}


LOGIN = {"login_unix_socket": "/run/redis/redis-server.sock", "login_host": "10.0.0.5", "login_port": 6380,
         "login_user": "admin", "login_password": "s3cret", "login_tls": True, "login_tls_ca_file": "/ca.pem"}


def test_login_options_name_the_socket_when_it_exists_and_keep_the_password_out_of_the_text():
    where = endpoint_from_params(LOGIN, db=2, socket_exists=lambda path: True)
    assert (where.unix_socket, where.username, where.password, where.db) == (
        "/run/redis/redis-server.sock", "admin", "s3cret", 2)
    assert "s3cret" not in repr(where) and "s3cret" not in where.describe()


def test_login_options_fall_back_to_host_and_port_without_the_socket_and_drop_a_user_without_password():
    where = endpoint_from_params({**LOGIN, "login_password": None}, socket_exists=lambda path: False)
    assert (where.unix_socket, where.host, where.port, where.tls, where.tls_ca_file) == (
        None, "10.0.0.5", 6380, True, "/ca.pem")
    assert (where.username, where.password, where.db) == (None, None, 0)


def test_login_argument_spec_hides_the_password_and_matches_the_options_the_endpoint_reads():
    spec = login_argument_spec()
    assert spec["login_password"]["no_log"] is True
    assert set(spec) == set(LOGIN)
