"""Reading worker replies, refusing broadcasts, running the helper, waiting for a drain."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    CeleryControlError,
    HelperTarget,
    build_request,
    consumer_commands,
    control_outcome,
    helper_time_budget,
    program_source,
    progress_line,
    run_helper,
    summarize_inspection,
    task_ref,
    validate_nodes,
    wait_until_idle,
)

BLUE, GREEN = "default-blue@web1", "default-green@web1"
TASK = {"id": "t1", "name": "proj.tasks.resize", "args": ["secret-arg"], "kwargs": {"pw": "x"},
        "time_start": 1700000000.5, "worker_pid": 99, "hostname": BLUE}


# -- destinations ------------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", [[], [""], ["  "]])
def test_empty_destination_is_refused_rather_than_broadcast(nodes):
    with pytest.raises(CeleryControlError) as raised:
        validate_nodes(nodes)
    assert raised.value.kind == "bad_request"


@pytest.mark.parametrize("node", ["default-*@web1", "default-blue@web?", " default-blue@web1"])
def test_nodename_that_is_a_pattern_is_refused(node):
    with pytest.raises(CeleryControlError, match="exact"):
        validate_nodes([node])


def test_duplicate_nodenames_are_asked_once():
    assert validate_nodes([BLUE, GREEN, BLUE]) == [BLUE, GREEN]


def test_request_refuses_unknown_fact_and_unknown_command():
    with pytest.raises(CeleryControlError, match="unknown inspect facts"):
        build_request("proj", [BLUE], 1.0, inspect=["shutdown"])
    with pytest.raises(CeleryControlError, match="bad control command"):
        build_request("proj", [BLUE], 1.0, control=[{"command": "shutdown", "queue": "q"}])
    with pytest.raises(CeleryControlError, match="destination"):
        build_request("proj", [], 1.0, control=[{"command": "cancel_consumer", "queue": "q"}])


# -- interpreting replies ----------------------------------------------------------------------


def test_no_reply_at_all_is_unknown_not_drained():
    # Celery's inspect returns None when nobody answered within the timeout.
    summary = summarize_inspection([BLUE], {"active": None, "reserved": None})
    assert summary["unanswered"] == [BLUE]
    assert summary["nodes"][BLUE]["idle"] is None
    assert summary["nodes"][BLUE]["active"] is None
    assert summary["nodes"][BLUE]["active_count"] is None
    assert summary["drained"] is False


def test_partial_reply_reports_each_node_and_is_not_drained():
    summary = summarize_inspection(
        [BLUE, GREEN], {"active": {BLUE: []}, "reserved": {BLUE: []}, "ping": {BLUE: {"ok": "pong"}}})
    assert summary["nodes"][BLUE]["idle"] is True
    assert summary["nodes"][BLUE]["ping"] is True
    assert summary["nodes"][GREEN] == {
        "answered": False, "unanswered_facts": ["active", "reserved", "ping"], "ping": False,
        "active": None, "active_count": None, "reserved": None, "reserved_count": None,
        "idle": None}
    assert summary["unanswered"] == [GREEN]
    assert summary["drained"] is False


def test_node_that_answered_only_some_facts_is_unknown():
    summary = summarize_inspection([BLUE], {"active": {BLUE: []}, "reserved": None})
    assert summary["nodes"][BLUE]["idle"] is None
    assert summary["nodes"][BLUE]["unanswered_facts"] == ["reserved"]
    assert summary["drained"] is False


def test_reply_from_a_node_not_asked_is_ignored():
    summary = summarize_inspection(
        [BLUE], {"active": {BLUE: [], GREEN: [TASK]}, "reserved": {BLUE: [], GREEN: [TASK]}})
    assert list(summary["nodes"]) == [BLUE]
    assert summary["ignored_replies"] == [GREEN]
    assert summary["drained"] is True


def test_tasks_are_counted_per_node_without_their_arguments():
    summary = summarize_inspection(
        [BLUE], {"active": {BLUE: [TASK]}, "reserved": {BLUE: [dict(TASK, id="t2")]}})
    node = summary["nodes"][BLUE]
    assert node["active"] == [{"id": "t1", "name": "proj.tasks.resize",
                               "time_start": 1700000000.5, "worker_pid": 99}]
    assert (node["active_count"], node["reserved_count"], node["idle"]) == (1, 1, False)
    assert "secret-arg" not in json.dumps(summary)
    assert summary["drained"] is False


def test_drained_needs_active_and_reserved_asked():
    summary = summarize_inspection([BLUE], {"ping": {BLUE: {"ok": "pong"}}})
    assert summary["nodes"][BLUE]["answered"] is True
    assert "idle" not in summary["nodes"][BLUE]
    assert summary["drained"] is False


def test_scheduled_entry_gives_the_task_and_its_eta():
    entry = {"eta": "2030-01-01T00:00:00+00:00", "priority": 6, "request": TASK}
    assert task_ref(entry) == {"id": "t1", "name": "proj.tasks.resize",
                               "time_start": 1700000000.5, "worker_pid": 99,
                               "eta": "2030-01-01T00:00:00+00:00"}


def test_stats_and_queues_are_summarized():
    stats = {"pid": 4242, "uptime": 10, "prefetch_count": 8, "total": {"a": 1},
             "broker": {"hostname": "h"},
             "pool": {"max-concurrency": 4, "processes": [1, 2, 3, 4],
                      "implementation": "celery.concurrency.prefork:TaskPool"}}
    queues = [{"name": "default", "exchange": {"name": "default"}}, {"name": "mail"}]
    node = summarize_inspection([BLUE], {"stats": {BLUE: stats},
                                         "active_queues": {BLUE: queues}})["nodes"][BLUE]
    assert node["stats"] == {"pid": 4242, "concurrency": 4, "processes": [1, 2, 3, 4],
                             "pool": "celery.concurrency.prefork:TaskPool",
                             "prefetch_count": 8, "uptime": 10, "total": {"a": 1}}
    assert node["queues"] == ["default", "mail"]


# -- consumers ---------------------------------------------------------------------------------


def test_consumer_commands_only_for_what_differs():
    assert consumer_commands(["a", "b"], ["a", "c", "c"], "present") == [
        {"command": "add_consumer", "queue": "c"}]
    assert consumer_commands(["a", "b"], ["b", "x"], "absent") == [
        {"command": "cancel_consumer", "queue": "b"}]
    assert consumer_commands(["a"], ["a"], "present") == []
    assert consumer_commands([], ["a"], "absent") == []


def test_control_outcome_per_node():
    replies = [{BLUE: {"ok": "no longer consuming from q"}}, {GREEN: {"error": "boom"}}]
    assert control_outcome(BLUE, replies) == ("ok", "no longer consuming from q")
    assert control_outcome(GREEN, replies) == ("error", "boom")
    assert control_outcome("other@web1", replies) == ("no_reply", None)
    assert control_outcome(BLUE, None) == ("no_reply", None)


# -- the helper process ------------------------------------------------------------------------


def _completed(stdout: str = "", stderr: str = "", returncode: int = 0):
    return subprocess.CompletedProcess(["python", "-"], returncode, stdout, stderr)


class RecordingRunner:
    def __init__(self, result=None, raises=None):
        self.result, self.raises, self.calls = result, raises, []

    def __call__(self, argv, **kwargs):
        self.calls.append((argv, kwargs))
        if self.raises:
            raise self.raises
        return self.result


# A stand-in for <venv>/bin/python: records what the process really received, answers ok.
RECORDING_PYTHON = """#!%s
import json, os, sys
seen = {"argv": open("/proc/self/cmdline", "rb").read().decode(errors="replace"),
        "stdin": sys.stdin.read(), "environ": dict(os.environ)}
open(os.environ["RECORD_TO"], "w").write(json.dumps(seen))
print(json.dumps({"ok": True, "inspect": {}}))
"""


def test_secrets_reach_the_helper_only_through_its_environment(tmp_path):
    """The whole path a module takes (HelperTarget from its parameters, a real process): the
    EnvironmentFile's password and the no_log `environment` option arrive in the helper's
    environment (so the test carries real secrets) and appear neither on its command line
    nor on its stdin."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(RECORDING_PYTHON % sys.executable)
    (venv / "bin" / "python").chmod(0o755)
    env_file = tmp_path / "app.env"
    env_file.write_text('CELERY_BROKER_URL="redis://celery:hunter2@127.0.0.1:6379/0"\n')
    record = tmp_path / "seen.json"
    target = HelperTarget.from_params({
        "app": "proj", "app_dir": str(tmp_path), "venv": str(venv),
        "environment_file": str(env_file), "run_as": None,
        "environment": {"API_TOKEN": "t0ken-s3cret", "RECORD_TO": str(record)}})
    target.run(build_request("proj", [BLUE], 1.0, inspect=["ping"]))
    seen = json.loads(record.read_text())
    assert seen["environ"]["CELERY_BROKER_URL"] == "redis://celery:hunter2@127.0.0.1:6379/0"
    assert seen["environ"]["API_TOKEN"] == "t0ken-s3cret"
    # The stand-in is a script: its interpreter comes first on the command line.
    assert seen["argv"].endswith(str(venv / "bin" / "python") + "\0-\0")
    assert seen["stdin"].startswith(program_source()) and "\nmain(" in seen["stdin"]
    for secret in ("hunter2", "t0ken-s3cret"):
        assert secret not in seen["argv"], "a secret is on the helper's command line"
        assert secret not in seen["stdin"], "a secret is in the program the helper reads"


def test_helper_gets_program_and_request_on_stdin_and_a_timeout():
    runner = RecordingRunner(_completed(json.dumps({"ok": True, "inspect": {}})))
    env = {"CELERY_BROKER_URL": "redis://celery:hunter2@h/0"}
    request = build_request("proj", [BLUE], 1.0, inspect=["ping"])
    run_helper("/srv/venv/bin/python", "/srv/app", env, request, runner=runner)
    argv, kwargs = runner.calls[0]
    assert argv == ["/srv/venv/bin/python", "-"]
    assert kwargs["cwd"] == "/srv/app" and kwargs["env"] == env
    assert repr(json.dumps(request)) in kwargs["input"]
    assert kwargs["timeout"] > helper_time_budget(request)


def test_answer_is_the_last_stdout_line_even_if_something_printed_before():
    runner = RecordingRunner(_completed("noise from a library\n" + json.dumps({"ok": True, "x": 1})))
    assert run_helper("py", "/", {}, build_request("p", [BLUE], 1.0), runner=runner)["x"] == 1


def test_helper_error_keeps_its_kind_and_masks_secrets():
    answer = {"ok": False, "error": "broker_unreachable", "message": "auth failed for hunter2"}
    runner = RecordingRunner(_completed(json.dumps(answer), stderr="trace hunter2", returncode=3))
    with pytest.raises(CeleryControlError) as raised:
        run_helper("py", "/", {}, build_request("p", [BLUE], 1.0), secrets=["hunter2"], runner=runner)
    assert raised.value.kind == "broker_unreachable"
    assert "hunter2" not in str(raised.value) and "hunter2" not in raised.value.detail


def test_helper_without_an_answer_is_an_error_with_its_stderr():
    runner = RecordingRunner(_completed("", stderr="Segmentation fault", returncode=139))
    with pytest.raises(CeleryControlError, match="exited 139 without an answer") as raised:
        run_helper("py", "/", {}, build_request("p", [BLUE], 1.0), runner=runner)
    assert "Segmentation fault" in raised.value.detail


def test_helper_that_hangs_is_killed_and_reported_as_timeout():
    runner = RecordingRunner(raises=subprocess.TimeoutExpired(["py", "-"], 40))
    with pytest.raises(CeleryControlError) as raised:
        run_helper("py", "/", {}, build_request("p", [BLUE], 1.0), runner=runner)
    assert raised.value.kind == "timeout"


def test_missing_interpreter_is_reported():
    with pytest.raises(CeleryControlError, match="cannot run /nonexistent/bin/python"):
        run_helper("/nonexistent/bin/python", "/", {}, build_request("p", [BLUE], 1.0))


# The real program, run by a python that has Celery, against failures that need no broker.
celery = pytest.importorskip("celery", reason="celery is not installed in this interpreter")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_real_helper_reports_an_app_that_cannot_be_imported(tmp_path):
    request = build_request("no_such_module", [BLUE], 1.0, inspect=["ping"])
    with pytest.raises(CeleryControlError) as raised:
        run_helper(sys.executable, str(tmp_path), {"PYTHONPATH": str(tmp_path)}, request)
    assert raised.value.kind == "app_not_loadable"
    assert "no_such_module" in str(raised.value)


def test_real_helper_survives_an_app_that_prints_and_reports_an_unreachable_broker(tmp_path: Path):
    (tmp_path / "noisy.py").write_text(
        "from celery import Celery\nprint('hello from the app')\napp = Celery('noisy')\n")
    env = {"PYTHONPATH": str(tmp_path),
           "CELERY_BROKER_URL": "redis://:hunter2@127.0.0.1:%d/0" % _free_port()}
    request = build_request("noisy", [BLUE], 1.0, inspect=["ping"], connect_timeout=1.0)
    with pytest.raises(CeleryControlError) as raised:
        run_helper(sys.executable, str(tmp_path), env, request, secrets=["hunter2"])
    assert raised.value.kind in ("broker_unreachable", "timeout")
    assert "hello from the app" in raised.value.detail
    assert "hunter2" not in str(raised.value) + raised.value.detail


# -- waiting for a drain -----------------------------------------------------------------------


def _answers(*polls):
    """A poll function that returns summarize_inspection of each given reply set in turn."""
    replies = list(polls)
    asked = []

    def poll(nodes, reply_timeout):
        asked.append((list(nodes), reply_timeout))
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, Exception):
            raise reply
        return summarize_inspection(nodes, reply)

    poll.asked = asked
    return poll


def _busy(*tasks):
    return {"active": {BLUE: list(tasks)}, "reserved": {BLUE: []}}


IDLE = {"active": {BLUE: []}, "reserved": {BLUE: []}}


def test_node_answering_with_tasks_then_empty_is_drained_and_names_what_it_waited_for(clock):
    lines = []
    poll = _answers(_busy(TASK, dict(TASK, id="t2")), _busy(TASK), IDLE)
    outcome = wait_until_idle([BLUE], poll, timeout=60, poll_interval=2, reply_timeout=1,
                              progress=lines.append, clock=clock, sleep=clock.sleep)
    assert outcome["drained"] is True
    assert outcome["polls"] == 3
    assert outcome["seconds"] == 4.0
    assert [t["id"] for t in outcome["waited_for"]] == ["t1", "t2"]
    assert outcome["still_running"] == []
    assert "2 running: proj.tasks.resize[t1], proj.tasks.resize[t2]; 60s left" in lines[0]
    assert "58s left" in lines[1]
    assert "drained" in lines[2]


def test_timeout_with_a_task_still_running_is_not_drained_and_lists_it(clock):
    outcome = wait_until_idle([BLUE], _answers(_busy(TASK)), timeout=5, poll_interval=2,
                              reply_timeout=1, clock=clock, sleep=clock.sleep)
    assert outcome["drained"] is False
    assert outcome["seconds"] == 5.0
    assert outcome["still_running"] == [{"id": "t1", "name": "proj.tasks.resize",
                                         "time_start": 1700000000.5, "worker_pid": 99,
                                         "node": BLUE, "state": "active"}]
    assert outcome["nodes"][BLUE]["idle"] is False


def test_node_that_never_answers_is_never_drained(clock):
    lines = []
    outcome = wait_until_idle([BLUE], _answers({"active": None, "reserved": None}), timeout=4,
                              poll_interval=1, reply_timeout=1, progress=lines.append,
                              clock=clock, sleep=clock.sleep)
    assert outcome["drained"] is False
    assert outcome["unanswered"] == [BLUE]
    assert all("no reply (unknown" in line for line in lines)


def test_one_idle_node_and_one_silent_node_is_not_drained(clock):
    reply = {"active": {BLUE: []}, "reserved": {BLUE: []}}
    outcome = wait_until_idle([BLUE, GREEN], _answers(reply), timeout=3, poll_interval=1,
                              reply_timeout=1, clock=clock, sleep=clock.sleep)
    assert outcome["drained"] is False
    assert outcome["unanswered"] == [GREEN]
    assert outcome["nodes"][BLUE]["idle"] is True


def test_failed_poll_counts_as_no_reply_and_is_recorded(clock):
    poll = _answers(CeleryControlError("broker gone", kind="broker_unreachable"), IDLE)
    outcome = wait_until_idle([BLUE], poll, timeout=10, poll_interval=1, reply_timeout=1,
                              clock=clock, sleep=clock.sleep)
    assert outcome["drained"] is True
    assert outcome["errors"] == ["broker gone"]
    assert outcome["polls"] == 2


def test_reply_timeout_shrinks_with_the_time_left_and_the_last_poll_is_at_the_deadline(clock):
    poll = _answers(_busy(TASK))
    wait_until_idle([BLUE], poll, timeout=3, poll_interval=2, reply_timeout=5,
                    clock=clock, sleep=clock.sleep)
    assert [t for _nodes, t in poll.asked] == [3, 1, 0.5]


def test_drain_refuses_an_empty_node_list():
    with pytest.raises(CeleryControlError):
        wait_until_idle([], _answers(IDLE), timeout=1, poll_interval=1, reply_timeout=1)


def test_progress_line_for_reserved_tasks_and_many_tasks():
    info = {"idle": False, "active": [dict(TASK, id=str(i)) for i in range(7)],
            "reserved": [{"id": "r", "name": "n"}]}
    line = progress_line(BLUE, info, 12.4)
    assert line.startswith(BLUE + ": 7 running: ")
    assert "+2 more" in line and "1 reserved: n[r]" in line and line.endswith("12s left")
