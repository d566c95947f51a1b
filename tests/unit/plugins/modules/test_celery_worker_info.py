"""celery_worker_info reports per node, marks silent nodes unknown, masks env-file secrets."""

from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.taskstack.celery.plugins.module_utils import celery_control
from ansible_collections.taskstack.celery.plugins.modules import celery_worker_info

BLUE, GREEN = "default-blue@web1", "default-green@web1"
PASSWORD = "s3cr3t-broker-pw"


@pytest.fixture
def target(app_target):
    return app_target("redis://celery:%s@127.0.0.1:6379/0" % PASSWORD)


def run_module(module, args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def helper(monkeypatch):
    """Replace the helper process by canned inspect replies; record the requests."""
    calls = []

    def fake_run(self, request, runner=None):
        calls.append({"request": request, "env": self.env})
        return {"ok": True, "celery_version": "5.7.0",
                "inspect": {fact: helper.replies.get(fact) for fact in request["inspect"]}}

    helper.replies = {}
    helper.calls = calls
    monkeypatch.setattr(celery_control.HelperTarget, "run", fake_run)
    return helper


def test_partial_reply_lists_the_silent_node_as_unanswered(target, helper, capsys):
    helper.replies = {"ping": {BLUE: {"ok": "pong"}}, "active": {BLUE: []},
                      "reserved": {BLUE: []}}
    result = run_module(celery_worker_info,
                        dict(target, nodes=[BLUE, GREEN], facts=["ping", "active", "reserved"]),
                        capsys)
    assert result["changed"] is False
    assert result["unanswered"] == [GREEN]
    assert result["nodes"][BLUE]["idle"] is True
    assert result["nodes"][GREEN]["idle"] is None
    assert result["drained"] is False
    assert helper.calls[0]["request"]["nodes"] == [BLUE, GREEN]


def test_helper_runs_with_the_environment_file_variables(target, helper, capsys):
    run_module(celery_worker_info, dict(target, nodes=[BLUE]), capsys)
    env = helper.calls[0]["env"]
    assert env["CELERY_BROKER_URL"].endswith("@127.0.0.1:6379/0")
    assert env["PYTHONPATH"] == target["app_dir"]
    assert helper.calls[0]["request"]["inspect"] == ["ping", "stats", "active", "reserved",
                                                     "active_queues"]


def test_secret_from_the_environment_file_never_appears_in_the_result(target, helper, capsys):
    helper.replies = {"ping": {BLUE: {"ok": "pong %s" % PASSWORD}}}
    result = run_module(celery_worker_info, dict(target, nodes=[BLUE], facts=["ping"]), capsys)
    assert PASSWORD not in json.dumps(result)


def test_broker_failure_fails_with_its_reason(target, monkeypatch, capsys):
    def broken(self, request, runner=None):
        raise celery_control.CeleryControlError("cannot connect to the broker", kind="broker_unreachable")

    monkeypatch.setattr(celery_control.HelperTarget, "run", broken)
    result = run_module(celery_worker_info, dict(target, nodes=[BLUE]), capsys)
    assert result["failed"] is True
    assert result["reason"] == "broker_unreachable"


def test_empty_node_list_fails_without_asking_anyone(target, helper, capsys):
    result = run_module(celery_worker_info, dict(target, nodes=[]), capsys)
    assert result["failed"] is True and "destination" in result["msg"]
    assert helper.calls == []


def test_export_line_in_the_environment_file_is_a_clear_error(target, helper, tmp_path, capsys):
    bad = tmp_path / "bad.env"
    bad.write_text("export CELERY_BROKER_URL=redis://celery:%s@h/0\n" % PASSWORD)
    result = run_module(celery_worker_info,
                        dict(target, environment_file=str(bad), nodes=[BLUE]), capsys)
    assert result["failed"] is True
    assert "export" in result["msg"] and "line 1" in result["msg"]
    assert PASSWORD not in json.dumps(result)


def test_missing_venv_python_says_what_to_fix(target, helper, tmp_path, capsys):
    result = run_module(celery_worker_info, dict(target, venv=str(tmp_path / "nope"),
                                                 nodes=[BLUE]), capsys)
    assert result["failed"] is True
    assert "bin/python is missing or not executable" in result["msg"]
