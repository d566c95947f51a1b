"""The control helper and plugins against a real Redis broker and a real Celery worker.

Run: .venv/bin/python -m pytest -q tests/integration   (needs redis-server on PATH; about 1 min)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    HelperTarget,
    build_request,
    wait_until_idle,
)

GHOST = "ghost@integration"
QUEUES = ["it_a", "it_b"]  # what the worker fixture consumes


@pytest.fixture
def target(celery_app) -> HelperTarget:
    return HelperTarget.from_params(dict(celery_app, environment={}, run_as=None))


def send(celery_app, queue: str, seconds: float) -> str:
    """Send demoapp.sleep_for(seconds) to queue, from a client process like the app's own."""
    target = HelperTarget.from_params(dict(celery_app, environment={}, run_as=None))
    code = ("from demoapp import sleep_for\n"
            "print(sleep_for.apply_async((%r,), queue=%r).id)\n" % (seconds, queue))
    out = subprocess.run([sys.executable, "-c", code], cwd=celery_app["app_dir"], env=target.env,
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip().splitlines()[-1]


def queue_length(redis_broker: str, queue: str) -> int:
    import redis

    return redis.Redis.from_url(redis_broker).llen(queue)


def test_worker_answers_ping_stats_and_queues_and_a_missing_node_is_unknown(target, worker):
    summary = target.inspect([worker, GHOST], ["ping", "stats", "active", "reserved",
                                               "active_queues"], 1.0)
    node = summary["nodes"][worker]
    assert node["answered"] and node["ping"] is True
    assert node["stats"]["concurrency"] == 2 and node["stats"]["pid"] > 0
    assert sorted(node["queues"]) == QUEUES
    assert node["idle"] is True
    assert summary["unanswered"] == [GHOST]
    assert summary["nodes"][GHOST]["idle"] is None
    assert summary["drained"] is False  # the ghost is unknown, so nothing is drained


def test_cancel_then_add_consumer_changes_what_the_worker_consumes(target, worker):
    for command, state, expected in (("cancel_consumer", "absent", ["it_a"]),
                                     ("add_consumer", "present", QUEUES)):
        request = build_request(target.app, [worker], 2.0,
                                control=[{"command": command, "queue": "it_b"}],
                                await_queues={state: {worker: ["it_b"]}, "within": 10})
        document = target.run(request)
        assert document["after"]["settled"] is True
        seen = target.inspect([worker], ["active_queues"], 2.0)["nodes"][worker]["queues"]
        assert sorted(seen) == expected


def test_drain_waits_for_the_running_task_and_leaves_new_tasks_queued(target, worker, live,
                                                                      celery_app, redis_broker):
    running = send(celery_app, "it_a", 3)
    live.wait_for(lambda: target.inspect([worker], ["active"], 1.0)["nodes"][worker]["active"],
                  20, "the task to start")
    cancel = [{"command": "cancel_consumer", "queue": q} for q in QUEUES]
    target.run(build_request(target.app, [worker], 2.0, control=cancel,
                             await_queues={"absent": {worker: QUEUES}, "within": 10}))
    queued = send(celery_app, "it_a", 0.1)

    lines: list[str] = []
    outcome = wait_until_idle(
        [worker], lambda nodes, t: target.inspect(nodes, ["active", "reserved"], t),
        timeout=30, poll_interval=0.5, reply_timeout=2.0, progress=lines.append)

    assert outcome["drained"] is True, outcome
    assert [t["id"] for t in outcome["waited_for"]] == [running]
    assert outcome["seconds"] >= 0.5
    assert any(running in line and "s left" in line for line in lines)
    assert queue_length(redis_broker, "it_a") == 1, "a worker that no longer consumes took %s" % queued

    # Giving the queue back is what a rescue does: the waiting task then runs.
    target.run(build_request(target.app, [worker], 2.0,
                             control=[{"command": "add_consumer", "queue": "it_a"}],
                             await_queues={"present": {worker: ["it_a"]}, "within": 10}))
    live.wait_for(lambda: queue_length(redis_broker, "it_a") == 0, 20, "the queued task to be taken")


def _playbook(tmp_path: Path, celery_app: dict, worker: str) -> Path:
    """A playbook as JSON (which is YAML) that drains the worker and saves the result."""
    result_file = tmp_path / "drain.json"
    play = [{
        "name": "Drain the live worker",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"name": "Drain", "register": "drain",
             "taskstack.celery.celery_drain": dict(celery_app, nodes=[worker], timeout=30,
                                                   poll_interval=0.5)},
            {"name": "Save the result",
             "ansible.builtin.copy": {"content": "{{ drain | to_json }}",
                                      "dest": str(result_file), "mode": "0600"}},
        ],
    }]
    path = tmp_path / "drain.yml"
    path.write_text(json.dumps(play))
    return path


def _ansible_playbook(playbook: Path, collections_root: Path,
                      *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_root),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
               "-c", "local", str(playbook), *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180,
                          check=False)


def test_celery_drain_action_through_ansible_check_mode_then_for_real(tmp_path, worker, live,
                                                                      celery_app, target):
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed next to this python")
    playbook = _playbook(tmp_path, celery_app, worker)
    checked = _ansible_playbook(playbook, live.collections_root, "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "would stop consuming it_a, it_b" in checked.stdout
    still = target.inspect([worker], ["active_queues"], 2.0)["nodes"][worker]["queues"]
    assert sorted(still) == QUEUES, "check mode changed what the worker consumes"

    running = send(celery_app, "it_b", 15)  # outlasts ansible start-up and the cancel step
    live.wait_for(lambda: target.inspect([worker], ["active"], 1.0)["nodes"][worker]["active"],
                  20, "the task to start")
    real = _ansible_playbook(playbook, live.collections_root)
    assert real.returncode == 0, real.stdout + real.stderr
    result = json.loads((tmp_path / "drain.json").read_text())
    assert result["drained"] is True
    assert result["cancelled_queues"] == {worker: QUEUES}
    assert running in [t["id"] for t in result["waited_for"]]
    assert "celery_drain [localhost] %s: 1 running: demoapp.sleep_for[%s]" % (worker, running) \
        in real.stdout
    for secret in live.secrets:
        assert secret not in real.stdout + real.stderr
    assert target.inspect([worker], ["active_queues"], 2.0)["nodes"][worker]["queues"] == []
