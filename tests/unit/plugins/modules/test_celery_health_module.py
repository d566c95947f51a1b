"""celery_health reports unhealthy as data, fails only when Redis or the workers cannot be read."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.taskstack.celery.plugins.module_utils import celery_control
from ansible_collections.taskstack.celery.plugins.module_utils.redis_client import (
    AuthenticationError,
    RedisConnectionError,
)
from ansible_collections.taskstack.celery.plugins.modules import celery_health
from ansible_collections.taskstack.celery.tests.unit.plugins.recorded_health import (
    BLUE,
    GREEN,
    INFO_PERSISTENCE_AOF,
    INSPECT_BLUE_ONLY,
    FakeRedis,
)

REDIS_PASSWORD = "r3dis-monitor-pw"
BROKER_PASSWORD = "s3cr3t-broker-pw"
LOGIN = {"login_host": "redis.invalid", "login_user": "monitor", "login_password": REDIS_PASSWORD}


def run_module(args, capsys, check_mode=False):
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args), pytest.raises(SystemExit):
        celery_health.main()
    return json.loads(capsys.readouterr().out)


class Broker:
    """Stands in for open_client: the recorded server, or an error; records the endpoints."""

    def __init__(self):
        self.server = FakeRedis()
        self.server.close = lambda: None
        self.endpoints = []
        self.error: Exception | None = None

    def __call__(self, endpoint):
        self.endpoints.append(endpoint)
        if self.error is not None:
            raise self.error
        return self.server


@pytest.fixture
def broker(monkeypatch):
    fake = Broker()
    monkeypatch.setattr(celery_health, "open_client", fake)
    return fake


@pytest.fixture
def target(app_target):
    return app_target("redis://celery:%s@redis.invalid:6379/0" % BROKER_PASSWORD)


@pytest.fixture
def helper(monkeypatch):
    """The helper process replaced by the recorded inspect replies; records the requests."""
    helper.requests = []
    helper.replies = INSPECT_BLUE_ONLY

    def fake_run(self, request, runner=None):
        helper.requests.append(request)
        return {"ok": True, "celery_version": "5.7.0",
                "inspect": {fact: helper.replies.get(fact) for fact in request["inspect"]}}

    monkeypatch.setattr(celery_control.HelperTarget, "run", fake_run)
    return helper


def test_healthy_broker_is_reported_unchanged(broker, capsys):
    result = run_module(dict(LOGIN, queues=["default"]), capsys)
    assert result.get("failed") is not True and result["changed"] is False
    assert result["healthy"] is True and result["problems"] == []
    assert result["queues"]["default"] == {
        "depth": 5, "by_priority": {"0": 2, "3": 1, "6": 0, "9": 2}, "max_depth": None}
    assert result["nodes"] == {}
    where = broker.endpoints[0]
    assert (where.host, where.username, where.password) == ("redis.invalid", "monitor", REDIS_PASSWORD)
    assert where.db == 0


def test_broker_database_is_the_one_read(broker, capsys):
    run_module(dict(LOGIN, login_db=3), capsys)
    assert broker.endpoints[0].db == 3


def test_unhealthy_is_data_not_a_failure(broker, capsys):
    broker.server.sections["persistence"] = dict(INFO_PERSISTENCE_AOF, aof_last_write_status="err")
    result = run_module(dict(LOGIN, queues=["default"], max_queue_depth=4), capsys)
    assert result.get("failed") is not True
    assert result["healthy"] is False
    assert result["problems"] == ["queue default: depth 5 > max 4",
                                  "redis aof_last_write_status: err (want ok)"]


def test_options_reach_kombu_key_names_and_thresholds(broker, capsys):
    result = run_module(dict(LOGIN, queues=["default"], key_prefix="proj:", max_unacked=0,
                             priority_steps=[0, 9], queue_max_depth={"default": "2"}), capsys)
    assert result["queues"]["default"] == {"depth": 3, "by_priority": {"0": 1, "9": 2},
                                           "max_depth": 2}
    assert result["problems"] == ["queue default: depth 3 > max 2", "unacked: 1 > max 0"]


def test_unreachable_redis_fails_without_the_password(broker, capsys):
    broker.error = RedisConnectionError("Error 111 connecting to redis.invalid:6379. Connection refused.")
    result = run_module(dict(LOGIN, queues=["default"]), capsys)
    assert result["failed"] is True
    assert result["msg"].startswith("cannot read Redis at redis.invalid:6379 as monitor: Error 111")
    assert "healthy" not in result


def test_refused_login_fails(broker, capsys):
    broker.error = AuthenticationError("invalid username-password pair or user is disabled.")
    assert run_module(dict(LOGIN, queues=["default"]), capsys)["failed"] is True


@pytest.mark.parametrize(("option", "value"), [("max_queue_depth", -1), ("login_db", -1),
                                               ("queue_max_depth", {"bulk": "many"}),
                                               ("queue_max_depth", {"bulk": -5})])
def test_bad_threshold_is_refused_before_redis_is_asked(broker, capsys, option, value):
    result = run_module(dict(LOGIN, **{option: value}), capsys)
    assert result["failed"] is True and option in result["msg"]
    assert broker.endpoints == []


def test_check_mode_reports_the_same(broker, capsys):
    result = run_module(dict(LOGIN, queues=["default"], max_queue_depth=4), capsys, check_mode=True)
    assert result["changed"] is False and result["healthy"] is False
    # Read-only: the collectors only ever send INFO, LLEN and HLEN.
    assert {command for command, key in broker.server.asked} == {"INFO", "LLEN", "HLEN"}


def test_nodes_need_the_app_to_ask_them(broker, capsys):
    result = run_module(dict(LOGIN, nodes=[BLUE]), capsys)
    assert result["failed"] is True and "app" in result["msg"]


def test_silent_node_is_a_problem_and_counts_come_from_the_replies(broker, target, helper, capsys):
    result = run_module(dict(LOGIN, **target, queues=["default"], nodes=[BLUE, GREEN]), capsys)
    assert helper.requests[0]["nodes"] == [BLUE, GREEN]
    assert helper.requests[0]["inspect"] == ["ping", "active", "reserved", "scheduled"]
    assert result["nodes"][BLUE] == {"ping": True, "active": 1, "reserved": 1, "scheduled": 1}
    assert result["problems"] == ["node %s: no answer to ping" % GREEN]


def test_helper_that_cannot_reach_the_broker_fails(broker, target, monkeypatch, capsys):
    def broken(self, request, runner=None):
        raise celery_control.CeleryControlError("broker unreachable", kind="broker_unreachable")

    monkeypatch.setattr(celery_control.HelperTarget, "run", broken)
    result = run_module(dict(LOGIN, **target, nodes=[BLUE]), capsys)
    assert result["failed"] is True and result["reason"] == "broker_unreachable"


def test_no_secret_in_the_result(broker, target, helper, capsys):
    result = run_module(dict(LOGIN, **target, queues=["default"], nodes=[BLUE]), capsys)
    text = json.dumps(result)
    assert REDIS_PASSWORD not in text and BROKER_PASSWORD not in text


def test_secrets_in_an_error_are_masked(broker, target, monkeypatch, capsys):
    broker.error = RedisConnectionError("AUTH monitor %s refused" % REDIS_PASSWORD)
    assert REDIS_PASSWORD not in json.dumps(run_module(dict(LOGIN), capsys))

    def failing(self, request, runner=None):
        raise celery_control.CeleryControlError("app not loadable", kind="app_not_loadable",
                                                detail="redis://celery:%s@redis" % BROKER_PASSWORD)

    broker.error = None
    monkeypatch.setattr(celery_control.HelperTarget, "run", failing)
    result = run_module(dict(LOGIN, **target, nodes=[BLUE]), capsys)
    assert result["failed"] is True and "redis://celery:" in result["helper_stderr"]
    assert BROKER_PASSWORD not in json.dumps(result)
