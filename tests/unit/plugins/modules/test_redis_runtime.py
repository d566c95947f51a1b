"""redis_runtime: value comparison, the safe AOF switch and the runtime/restart split."""

from __future__ import annotations

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils.redis_client import (
    AuthenticationError,
    Endpoint,
    ResponseError,
)
from ansible_collections.taskstack.celery.plugins.modules.redis_runtime import (
    Runtime,
    connect,
    normalize,
    same_value,
)


def as_redis_py_parses(state):
    """INFO fields in the types redis-py's parser gives them: numbers become int."""
    return {k: int(v) if v.lstrip("-").isdigit() else v for k, v in state.items()}


class FakeRedis:
    """A redis.Redis stand-in: INFO persistence from a script of states, CONFIG from a dict;
    replies shaped as redis-py (decode_responses=True) returns them. Records every write."""

    def __init__(self, states, config=None, immutable=()):
        self.states = list(states)
        self.config = dict(config or {})
        self.immutable = set(immutable)
        self.commands = []

    def info(self, section=None):
        state = self.states[0]
        if len(self.states) > 1:
            self.states.pop(0)
        return as_redis_py_parses(state)

    def config_get(self, pattern="*"):
        return {pattern: self.config[pattern]} if pattern in self.config else {}

    def config_set(self, name, value):
        self.commands.append(("CONFIG", "SET", name, value))
        if name in self.immutable:
            # redis-py strips the "ERR " of the server's error line.
            raise ResponseError("CONFIG SET failed (possibly related to argument '%s') - can't set immutable config" % name)
        self.config[name] = value
        return True

    def bgsave(self):
        self.commands.append(("BGSAVE",))
        return True


IDLE_RDB_ONLY = {"aof_enabled": "0", "rdb_bgsave_in_progress": "0", "aof_rewrite_in_progress": "0",
                 "aof_rewrite_scheduled": "0", "aof_last_bgrewrite_status": "ok", "rdb_last_save_time": "1",
                 "rdb_last_bgsave_status": "ok"}


def state(**changes):
    return {**IDLE_RDB_ONLY, **changes}


def runtime(server, timeout=5):
    clock = iter(range(10 ** 6))
    return Runtime(server, timeout, sleep=lambda s: None, clock=lambda: next(clock) * 0.01)


@pytest.mark.parametrize(
    ("desired", "live"),
    [
        (True, "yes"),
        (False, "no"),
        ("12gb", str(12 * 1024 ** 3)),
        ("64mb", "67108864"),
        ("1k", "1000"),
        (["900 1", "300 10"], "900 1 300 10"),
        ('"appendonly.aof"', "appendonly.aof"),
        ("127.0.0.1  -::1", "127.0.0.1 -::1"),
        ("", ""),
        ("everysec", "everysec"),
    ],
)
def test_desired_value_matches_what_config_get_answers(desired, live):
    assert same_value(desired, live)


@pytest.mark.parametrize(("desired", "live"), [("1gb", "1000000000"), ("everysec", "always"), ("", "900 1")])
def test_different_values_are_told_apart(desired, live):
    assert not same_value(desired, live)


def test_normalize_writes_booleans_the_redis_way():
    assert normalize(True) == "yes"


def test_enabling_aof_waits_for_a_rewrite_scheduled_behind_a_bgsave():
    server = FakeRedis([
        state(),  # before: AOF off
        state(aof_enabled="1", rdb_bgsave_in_progress="1", aof_rewrite_scheduled="1"),
        state(aof_enabled="1", rdb_bgsave_in_progress="1", aof_rewrite_scheduled="1"),
        state(aof_enabled="1", aof_rewrite_in_progress="1"),
        state(aof_enabled="1"),
    ])
    assert runtime(server).switch_appendonly(True, check_mode=False) is True
    assert ("CONFIG", "SET", "appendonly", "yes") in server.commands
    assert server.states == [state(aof_enabled="1")], "returned before the rewrite finished"


def test_failed_rewrite_is_an_error_not_a_success():
    server = FakeRedis([state(), state(aof_enabled="1", aof_last_bgrewrite_status="err")])
    with pytest.raises(RuntimeError, match="did not succeed"):
        runtime(server).switch_appendonly(True, check_mode=False)


def test_rewrite_that_never_ends_times_out():
    server = FakeRedis([state(), state(aof_enabled="1", aof_rewrite_in_progress="1")])
    with pytest.raises(TimeoutError):
        runtime(server, timeout=1).switch_appendonly(True, check_mode=False)


def test_aof_already_on_is_left_alone():
    server = FakeRedis([state(aof_enabled="1")])
    assert runtime(server).switch_appendonly(True, check_mode=False) is False
    assert server.commands == []


def test_check_mode_reports_the_switch_without_making_it():
    server = FakeRedis([state()])
    assert runtime(server).switch_appendonly(True, check_mode=True) is True
    assert server.commands == []


def test_disabling_aof_saves_a_fresh_rdb_first():
    server = FakeRedis([
        state(aof_enabled="1"),
        state(),  # idle after CONFIG SET appendonly no
        state(),  # rdb_last_save_time read before BGSAVE
        state(rdb_bgsave_in_progress="1"),
        state(rdb_last_save_time="2"),
    ])
    assert runtime(server).switch_appendonly(False, check_mode=False) is True
    assert server.commands == [("CONFIG", "SET", "appendonly", "no"), ("BGSAVE",)]


def test_runtime_settings_are_set_and_fixed_ones_only_reported():
    server = FakeRedis(
        [state()],
        config={"maxmemory": "0", "appendfsync": "everysec", "databases": "16", "dir": "/var/lib/redis",
                "io-threads": "1"},
        immutable={"io-threads"},
    )
    changed, reasons = runtime(server).apply_config(
        {"maxmemory": "1gb", "appendfsync": "everysec", "databases": 32, "dir": "/srv/redis",
         "io-threads": 4, "no-such-directive": "x"},
        restart_only=["databases"],
        check_mode=False,
    )
    assert changed == ["maxmemory"]
    assert server.config["maxmemory"] == "1gb"
    assert [r.split(":")[0] for r in reasons] == ["databases", "dir", "io-threads", "no-such-directive"]
    assert server.config["databases"] == "16" and server.config["dir"] == "/var/lib/redis"


def test_check_mode_sets_nothing():
    server = FakeRedis([state()], config={"maxmemory": "0"})
    changed, reasons = runtime(server).apply_config({"maxmemory": "1gb"}, [], check_mode=True)
    assert (changed, reasons) == (["maxmemory"], [])
    assert server.config["maxmemory"] == "0"


def test_config_get_of_a_number_compares_as_text():
    server = FakeRedis([state()], config={"databases": 16})
    assert runtime(server).apply_config({"databases": 16}, [], check_mode=False) == ([], [])


PARAMS = {"login_unix_socket": None, "login_host": "127.0.0.1", "login_port": 6379,
          "login_user": "admin", "login_password": "s3cret", "login_tls": False,
          "login_tls_ca_file": None, "allow_unauthenticated": True}


class Opener:
    """open_client stand-in: refuses the listed endpoints with the given errors."""

    def __init__(self, refuse):
        self.refuse, self.tried = refuse, []

    def __call__(self, endpoint):
        self.tried.append(endpoint)
        error = self.refuse.get(endpoint.password is not None)
        if error:
            raise error
        return "client"


def test_refused_password_falls_back_to_an_unmanaged_server_without_auth():
    opener = Opener({True: AuthenticationError("invalid username-password pair or user is disabled.")})
    assert connect(PARAMS, opener=opener) == "client"
    assert [e.password for e in opener.tried] == ["s3cret", None]
    assert "s3cret" not in repr(opener.tried)


def test_refused_password_is_an_error_when_unauthenticated_is_not_allowed():
    opener = Opener({True: AuthenticationError("invalid username-password pair")})
    with pytest.raises(AuthenticationError):
        connect(dict(PARAMS, allow_unauthenticated=False), opener=opener)
    assert len(opener.tried) == 1


def test_unreachable_server_is_not_retried_without_auth():
    opener = Opener({True: ConnectionRefusedError(111, "Connection refused")})
    with pytest.raises(OSError):
        connect(PARAMS, opener=opener)
    assert len(opener.tried) == 1


def test_endpoint_names_no_password():
    where = Endpoint(username="admin", password="s3cret")
    assert "s3cret" not in repr(where) and "s3cret" not in where.describe()


class FakeRedisOnFile(FakeRedis):
    """A server started on config_file (INFO server), recording CONFIG REWRITE."""

    def __init__(self, config_file, **kwargs):
        super().__init__([state(config_file=config_file)], **kwargs)

    def config_rewrite(self):
        self.commands.append(("CONFIG", "REWRITE"))
        return True


def test_a_server_started_on_its_state_file_persists_what_changed_there():
    server = FakeRedisOnFile("/var/lib/redis/redis-state.conf")
    assert runtime(server).rewrite_if_started_on("/var/lib/redis/redis-state.conf") is True
    assert server.commands == [("CONFIG", "REWRITE")]


def test_a_server_started_on_another_file_is_not_rewritten():
    # A standalone server runs on the role's /etc/redis/redis.conf, which only the role writes.
    server = FakeRedisOnFile("/etc/redis/redis.conf")
    assert runtime(server).rewrite_if_started_on("/var/lib/redis/redis-state.conf") is False
    assert server.commands == []
