"""The helper program on its own: every call names its nodes, queues settle, failures are kinds."""

from __future__ import annotations

import ast
import json

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils import celery_control_program as program
from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    build_request,
    helper_program,
    helper_time_budget,
    program_source,
)

BLUE, GREEN = "default-blue@web1", "default-green@web1"


class FakeInspect:
    def __init__(self, control, destination, timeout, connection):
        self.control = control
        control.calls.append(("inspect", tuple(destination), timeout, connection))

    def ping(self):
        return {n: {"ok": "pong"} for n in self.control.nodes}

    def active_queues(self):
        return self.control.queue_answers.pop(0) if len(self.control.queue_answers) > 1 \
            else self.control.queue_answers[0]


class FakeControl:
    def __init__(self, nodes, queue_answers=({},), fail=None):
        self.nodes, self.queue_answers, self.fail, self.calls = nodes, list(queue_answers), fail, []

    def inspect(self, destination, timeout, connection):
        return FakeInspect(self, destination, timeout, connection)

    def cancel_consumer(self, queue, destination, reply, timeout, connection):
        self.calls.append(("cancel_consumer", queue, tuple(destination), reply, connection))
        if self.fail:
            raise self.fail
        return [{n: {"ok": "no longer consuming from %s" % queue}} for n in destination]


class FakeApp:
    def __init__(self, control):
        self.control = control


def test_every_inspect_and_control_call_names_the_nodes_never_a_broadcast():
    control = FakeControl([BLUE, GREEN])
    request = build_request("proj", [BLUE, GREEN], 2.0, inspect=["ping"],
                            control=[{"command": "cancel_consumer", "queue": "q"}])
    result = program.execute(FakeApp(control), "conn", request)
    assert result["inspect"]["ping"] == {BLUE: {"ok": "pong"}, GREEN: {"ok": "pong"}}
    assert result["control"][0]["replies"][0] == {BLUE: {"ok": "no longer consuming from q"}}
    assert control.calls == [("inspect", (BLUE, GREEN), 2.0, "conn"),
                             ("cancel_consumer", "q", (BLUE, GREEN), True, "conn")]


def test_await_queues_polls_until_the_cancelled_queue_is_gone(clock):
    control = FakeControl([BLUE], queue_answers=[{BLUE: [{"name": "q"}]}, {BLUE: [{"name": "q"}]},
                                                 {BLUE: [{"name": "other"}]}])
    request = build_request("proj", [BLUE], 1.0, control=[{"command": "cancel_consumer", "queue": "q"}],
                            await_queues={"absent": {BLUE: ["q"]}, "within": 10})
    started = clock.now
    result = program.execute(FakeApp(control), None, request, clock=clock, sleep=clock.sleep)
    assert result["after"] == {"active_queues": {BLUE: [{"name": "other"}]}, "settled": True}
    assert clock.now - started == pytest.approx(0.4)


def test_await_queues_gives_up_unsettled_at_the_deadline_and_a_silent_node_never_settles(clock):
    control = FakeControl([BLUE], queue_answers=[{BLUE: []}])
    request = build_request("proj", [BLUE, GREEN], 1.0,
                            await_queues={"present": {BLUE: ["q"]}, "within": 1})
    started = clock.now
    result = program.execute(FakeApp(control), None, request, clock=clock, sleep=clock.sleep)
    assert result["after"]["settled"] is False and clock.now - started >= 1
    assert not program.queues_settled({BLUE: []}, [BLUE, GREEN], {"present": {}, "absent": {}})


def test_a_failing_control_command_is_a_control_failed_answer():
    control = FakeControl([BLUE], fail=RuntimeError("broker went away"))
    request = build_request("proj", [BLUE], 1.0, control=[{"command": "cancel_consumer", "queue": "q"}])
    with pytest.raises(program.Failure) as failed:
        program.execute(FakeApp(control), None, request)
    assert (failed.value.kind, failed.value.message) == ("control_failed", "RuntimeError: broker went away")


def test_run_refuses_a_request_without_nodes_before_it_connects(monkeypatch):
    pytest.importorskip("celery")
    monkeypatch.setattr(program, "load_app", lambda name: FakeApp(FakeControl([])))
    monkeypatch.setattr(program, "connect", lambda app, timeout: pytest.fail("connected"))
    request = dict(build_request("proj", [BLUE], 1.0), nodes=[])
    assert program.run(request) == {"ok": False, "error": "bad_request",
                                    "message": "refusing to run without a destination"}


def test_an_app_that_cannot_load_is_an_answer_not_a_traceback():
    pytest.importorskip("celery")
    answer = program.run(build_request("no_such_module_here", [BLUE], 1.0))
    assert answer["ok"] is False and answer["error"] == "app_not_loadable"
    assert "no_such_module_here" in answer["message"]


def test_stdin_text_is_this_file_and_one_call_with_literal_arguments():
    request = build_request("proj'); import os; os.system('x", [BLUE], 2.5, inspect=["ping"])
    text = helper_program(request)
    assert text.startswith(program_source())
    tree = ast.parse(text)
    call = tree.body[-1].value
    assert isinstance(call, ast.Call) and call.func.id == "main"
    assert [type(a) for a in call.args] == [ast.Constant, ast.Constant]
    assert json.loads(call.args[0].value) == request
    assert call.args[1].value == helper_time_budget(request)
    assert [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", None) == "main"] == [call]
