"""celery_drain: cancel every consumed queue, wait for active+reserved, never claim an unknown."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.taskstack.celery.plugins.action import celery_drain
from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    summarize_inspection,
)

BLUE, GREEN = "default-blue@web1", "default-green@web1"
TARGET = {"app": "proj", "app_dir": "/srv/proj", "venv": "/srv/venv",
          "environment_file": "/etc/celery/proj.env"}
TASK = {"id": "t1", "name": "proj.tasks.resize"}


class FakeHost:
    """Plays celery_worker_info and celery_consumer for a set of nodes, one poll at a time."""

    def __init__(self, queues, polls, answers_first=True, consumer_fails=False):
        self.queues = {node: list(q) for node, q in queues.items()}
        self.polls = list(polls)  # each: {node: [tasks]} or {node: None} for no reply
        self.answers_first = answers_first
        self.consumer_fails = consumer_fails
        self.calls = []

    def _state(self, nodes, tasks_by_node):
        active = {n: tasks_by_node[n] for n in nodes if tasks_by_node.get(n) is not None}
        reserved = {n: [] for n in active}
        queues = {n: [{"name": q} for q in self.queues[n]] for n in active}
        return {"active": active, "reserved": reserved, "active_queues": queues}

    def __call__(self, module_name, module_args, task_vars):
        self.calls.append((module_name, dict(module_args)))
        if module_name.endswith("celery_consumer"):
            if self.consumer_fails:
                return {"failed": True, "msg": "not_applied", "cancelled": module_args["queues"]}
            node = module_args["node"]
            self.queues[node] = [q for q in self.queues[node] if q not in module_args["queues"]]
            return {"changed": True, "cancelled": module_args["queues"]}
        nodes, facts = module_args["nodes"], module_args["facts"]
        if "active_queues" in facts:  # the first look, before cancelling
            tasks = {n: ([] if self.answers_first else None) for n in nodes}
        else:
            tasks = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
        replies = self._state(nodes, tasks)
        return dict(summarize_inspection(nodes, {f: replies[f] for f in facts}), changed=False)

    def sent(self, module_suffix):
        return [args for name, args in self.calls if name.endswith(module_suffix)]


def run_action(host, args, check_mode=False):
    task = MagicMock()
    task.args = dict(TARGET, **args)
    task.check_mode = check_mode
    task.async_val = 0
    action = celery_drain.ActionModule(task=task, connection=MagicMock(), play_context=MagicMock(),
                                       loader=None, templar=None, shared_loader_obj=None)
    action._execute_module = host
    return action.run(task_vars={"inventory_hostname": "web1"})


@pytest.fixture
def progress(monkeypatch):
    lines = []
    monkeypatch.setattr(celery_drain.display, "display", lambda msg, *a, **k: lines.append(msg))
    return lines


def test_node_with_tasks_then_empty_is_drained_after_cancelling_all_its_queues(progress):
    host = FakeHost({BLUE: ["default", "mail"]}, [{BLUE: [TASK]}, {BLUE: [TASK]}, {BLUE: []}])
    result = run_action(host, {"nodes": [BLUE], "poll_interval": 0.01, "timeout": 10})
    assert result["drained"] is True and result["changed"] is True
    assert host.sent("celery_consumer") == [dict(TARGET, environment={}, run_as=None, node=BLUE,
                                                 queues=["default", "mail"], state="absent",
                                                 timeout=2.0)]
    assert result["cancelled_queues"] == {BLUE: ["default", "mail"]}
    assert result["waited_for"] == [{"node": BLUE, "id": "t1", "name": "proj.tasks.resize"}]
    assert result["still_running"] == [] and result["polls"] == 3
    assert any("celery_drain [web1] default-blue@web1: 1 running: proj.tasks.resize[t1]" in line
               for line in progress)
    assert progress[-1].startswith("celery_drain [web1] drained after")


def test_timeout_returns_not_drained_with_the_running_tasks_and_does_not_fail(progress):
    host = FakeHost({BLUE: ["default"]}, [{BLUE: [TASK]}])
    result = run_action(host, {"nodes": [BLUE], "poll_interval": 0.05, "timeout": 0.2})
    assert result["drained"] is False and not result.get("failed")
    assert result["still_running"] == [dict(TASK, node=BLUE, state="active")]
    assert result["cancelled_queues"] == {BLUE: ["default"]}
    assert "NOT drained" in progress[-1]


def test_node_that_stops_answering_is_not_drained(progress):
    host = FakeHost({BLUE: ["default"]}, [{BLUE: None}])
    result = run_action(host, {"nodes": [BLUE], "poll_interval": 0.05, "timeout": 0.2})
    assert result["drained"] is False
    assert result["unanswered"] == [BLUE]


def test_partial_reply_idle_node_and_silent_node_is_not_drained(progress):
    host = FakeHost({BLUE: ["default"], GREEN: ["default"]}, [{BLUE: [], GREEN: None}])
    result = run_action(host, {"nodes": [BLUE, GREEN], "poll_interval": 0.05, "timeout": 0.2})
    assert result["drained"] is False
    assert result["unanswered"] == [GREEN]
    assert result["nodes"][BLUE]["idle"] is True


def test_silent_node_before_cancelling_fails_and_nothing_is_cancelled(progress):
    host = FakeHost({BLUE: ["default"]}, [{BLUE: []}], answers_first=False)
    result = run_action(host, {"nodes": [BLUE]})
    assert result["failed"] is True and result["drained"] is False
    assert result["unanswered"] == [BLUE]
    assert host.sent("celery_consumer") == []


def test_failed_cancel_reports_what_was_cancelled_for_the_rescue(progress):
    host = FakeHost({BLUE: ["default", "mail"]}, [{BLUE: []}], consumer_fails=True)
    result = run_action(host, {"nodes": [BLUE]})
    assert result["failed"] is True
    assert result["cancelled_queues"] == {BLUE: ["default", "mail"]}


def test_check_mode_reports_what_it_would_cancel_and_sends_nothing(progress):
    host = FakeHost({BLUE: ["default", "mail"]}, [{BLUE: []}])
    result = run_action(host, {"nodes": [BLUE]}, check_mode=True)
    assert result["changed"] is True
    assert result["cancelled_queues"] == {BLUE: ["default", "mail"]}
    assert host.sent("celery_consumer") == []
    assert [name for name, _args in host.calls] == ["taskstack.celery.celery_worker_info"]
    assert "would stop consuming default, mail" in progress[0]


def test_empty_node_list_is_refused(progress):
    host = FakeHost({}, [{}])
    result = run_action(host, {"nodes": []})
    assert result["failed"] is True and "destination" in result["msg"]
    assert host.calls == []
