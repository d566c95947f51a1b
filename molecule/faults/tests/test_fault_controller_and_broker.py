"""Fault matrix rows: the controller killed in the middle of a deploy, and Redis restarted while
the drain waits. Each row runs under load (loadlib.run_load_across) and counts sent, completed,
lost, run twice and what is left in the queues and kombu's `unacked` hash; printed with -s and
gathered in docs/reliability.md.

The controller is killed the hard way: SIGKILL to ansible-playbook's whole process group, as a
cancelled CI job or a lost runner does. Nothing of the deploy comes back; the worker host must
heal itself through the safety net the deploy armed there (a transient systemd timer firing
after the phase's limit plus celery_deploy_safety_net_margin).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from loadlib import (
    DEPLOY,
    LOCK,
    POOLS,
    active_queues,
    assert_load_proves_something,
    assert_nothing_lost,
    damage,
    deploy,
    ledger,
    live_colour,
    run_load_across,
    units,
)
from stacklib import inventory_dir, wait_for

# Short limits, so a row takes about a minute: the net fires DRAIN_TIMEOUT + MARGIN seconds after
# the drain began.
DRAIN_TIMEOUT = 10
MARGIN = 15
# A start limit with room: on the loaded 2-core CI machine a new colour took over 30 s to serve.
FAST = {"celery_deploy_drain_timeout": DRAIN_TIMEOUT, "celery_deploy_cold_timeout": 10,
        "celery_deploy_safety_net_margin": MARGIN, "celery_deploy_start_timeout": 120,
        "celery_deploy_update_timeout": 60}
# The task the drain begins with, in both strategies (tasks/cancel.yml).
DRAIN_TASK = "TASK [taskstack.celery.celery_deploy : Stop the serving nodes taking tasks and wait for the running ones]"
NET = "celery-demo-deploy-safety-net"
# Every task of the load is shorter than the scenario's hard time limit (40 s).
LONG_SECONDS = 25


def consuming(host, colour: str) -> bool:
    """Every pool of `colour` on the host consumes its queue, and no node of the other colour does."""
    name = host.backend.host
    queues = active_queues(host)
    want = {f"{pool}-{colour}@{name}": [queue] for pool, queue in zip(POOLS, ["celery", "slow"])}
    return {node: q for node, q in queues.items() if q} == want


def not_consuming(host) -> bool:
    return not any(active_queues(host).values())


# The first line of the workers play: the drain begins a few seconds later.
WORKERS_PLAY = "PLAY [Deploy the Celery workers"


def deploy_killed_at(host, extra_vars: dict, after_marker) -> dict:
    """Start deploy.yml; once its workers play begins, send a task that keeps the drain waiting
    (held until released, 34 s at most); once the drain began (DRAIN_TASK in the output), call
    `after_marker(host)` until it returns true, then SIGKILL the controller's whole process group
    and release the held task. Returns when the controller was killed and its output."""
    cmd = ["ansible-playbook", "-i", str(inventory_dir()), "-e", json.dumps(extra_vars), str(DEPLOY)]
    job = None
    with tempfile.NamedTemporaryFile("w+", prefix="taskstack-killed-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            def reached(marker):
                return marker in Path(log.name).read_text() or proc.poll() is not None

            wait_for(lambda: reached(WORKERS_PLAY), 240, what="the deploy's workers play")
            job = hold_task(host)
            wait_for(lambda: reached(DRAIN_TASK), 300, what="the deploy's drain")
            assert proc.poll() is None, "the deploy ended before the fault:\n" + Path(log.name).read_text()[-3000:]
            wait_for(lambda: after_marker(host), 30, interval=0.2, what="the moment to kill the controller")
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = time.time()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            if job:
                release_task(host, job)
        output = Path(log.name).read_text()
    Path(log.name).unlink()
    print(f"controller killed (SIGKILL to its process group) in the drain; last task: "
          f"{[line for line in output.splitlines() if line.startswith('TASK [')][-1:]}")
    return {"killed_at": killed_at, "output": output}


def hold_task(host) -> str:
    """Send a task that runs on the serving workers until released (80 s at most, with time
    limits of its own above that and below the 90 s visibility timeout: a loaded machine may take
    a minute from the workers play to the drain), and wait until it runs."""
    job = f"held-{uuid.uuid4().hex[:8]}"
    ledger(host, f"""
from demo.tasks import hold
hold.apply_async(({job!r}, 80), queue="celery", soft_time_limit=84, time_limit=88)
print(json.dumps(1))
""")
    wait_for(lambda: ledger(host, f'print(json.dumps(db.llen("demo:started:{job}")))'), 30,
             what="the held task to start")
    return job


def release_task(host, job: str) -> None:
    ledger(host, f'print(json.dumps(db.set("demo:release:{job}", 1)))')


def net_log(host) -> str:
    return host.run(f"cat /run/{NET}.log").stdout


@pytest.fixture(autouse=True)
def no_stale_lock(host):
    yield
    host.run(f"rm -rf {LOCK}")


def test_controller_killed_after_the_drain_cancelled_consuming_the_host_heals_itself(host):
    """The drain cancelled consuming, then the controller died: the safety net restarts the units
    (warm) within the drain timeout + margin; nothing lost, nothing run twice. The lock stays held,
    and the next deploy says so, naming the holder and what the net did; breaking it on purpose
    (celery_deploy_break_lock) deploys and reports the broken lock."""
    colour = live_colour(host)
    seen = {}

    def killed_drain(host):
        killed = deploy_killed_at(host, FAST, not_consuming)
        seen["recovered_after"] = round(wait_for(lambda: consuming(host, colour) and time.time(), 120, interval=1,
                                                 what="the host to consume again") - killed["killed_at"], 1)
        seen["net"] = net_log(host)
        seen["refused"], _report = deploy(extra_vars=FAST)
        seen["broken"], seen["report"] = deploy(extra_vars={**FAST, "celery_deploy_break_lock": True,
                                                            "celery_deploy_install": False})
        return seen

    counts = run_load(host, killed_drain)
    print(f"killed after the drain's cancel: the host consumed again {seen['recovered_after']} s after the kill "
          f"(net armed for {DRAIN_TIMEOUT} + {MARGIN} s); net log:\n{seen['net']}")
    assert " fired in phase drain" in seen["net"] and "gave back (rc=0)" in seen["net"], seen["net"]
    assert seen["recovered_after"] <= DRAIN_TIMEOUT + MARGIN + 15
    assert_nothing_lost(counts)
    # The stale lock is refused, named, with the net's story; then broken on purpose.
    refused = seen["refused"]
    assert refused.rc != 0 and refused.changed() == 0, refused.recap()
    assert "Another deploy of demo.app holds the lock" in refused.output
    assert "fired in phase drain" in refused.output and "celery_deploy_break_lock=true" in refused.output
    broken, report = seen["broken"], seen["report"]
    assert broken.rc == 0, broken.output[-3000:]
    assert "Breaking the deploy lock" in broken.output
    assert report["result"] == "ok" and "fired in phase drain" in " ".join(report["lock_broken"]["safety_net"])
    assert host.run(f"test -e {LOCK}").rc != 0
    assert "disarmed" in net_log(host).splitlines()[-1]


def test_controller_killed_in_the_middle_of_a_blue_green_switch_leaves_exactly_one_colour(host):
    """The new colour serves and the old one drains when the controller dies: the net restarts the
    old colour (it consumes again) and stops the new one; exactly one colour consumes, the live
    colour is unchanged, nothing lost, nothing run twice."""
    old = live_colour(host)
    new = "green" if old == "blue" else "blue"
    seen = {}

    def killed_switch(host):
        def draining(host):
            queues = active_queues(host)
            name = host.backend.host
            return queues.get(f"default-{new}@{name}") and not queues.get(f"default-{old}@{name}")

        # The new colour's release is built (a fresh host has none); the held task keeps the old
        # colour draining until the kill.
        killed = deploy_killed_at(host, {**FAST, "celery_deploy_strategy": "blue_green"}, draining)
        seen["recovered_after"] = round(wait_for(lambda: consuming(host, old) and time.time(), 120, interval=1,
                                                 what="the old colour alone to consume") - killed["killed_at"], 1)
        wait_for(lambda: all(not host.service(unit).is_running for unit in units(new)), 60,
                 what="the new colour to stop")
        seen["net"] = net_log(host)
        return seen

    counts = run_load(host, killed_switch)
    print(f"killed in the blue-green switch: {old} alone consumed again {seen['recovered_after']} s after the kill;"
          f" net log:\n{seen['net']}")
    # Killed while the old colour drained or stopped: both are the middle of the switch.
    assert re.search(r" fired in phase (drain|stop):", seen["net"]) and "gave back (rc=0)" in seen["net"], seen["net"]
    assert live_colour(host) == old
    assert consuming(host, old)
    assert all(not host.service(unit).is_running for unit in units(new))
    assert all(host.service(unit).is_running and host.service(unit).is_enabled for unit in units(old))
    assert_nothing_lost(counts)


def test_redis_restarted_while_the_drain_waits_loses_nothing(host):
    """`systemctl restart redis-server` while the drain waits for a running task: the deploy either
    completes or fails cleanly with the queues given back, nothing is lost, and the broker is left
    clean. A task whose ack went down with the connection runs again after the visibility
    timeout (Celery cannot ack on a connection that is gone): the only repeats allowed, each
    named with the restart's times (acks_lost_with_the_connection).

    Under the ACL the redis role wrote before (`user default reset off`) this row lost 0-3 tasks a
    run: Redis replays an AOF's MULTI/EXEC as the default user and dropped kombu's `unacked`
    entries of the messages a worker held (redis/redis#14541; users.acl.j2 says more, and
    molecule/redis/tests/test_durability.py shows the loss on a Redis with that ACL)."""
    colour = live_colour(host)
    seen = {}

    def restart_broker_in_drain(host):
        extra_vars = {**FAST, "celery_deploy_report": "/tmp/taskstack-faults-redis.json"}
        cmd = ["ansible-playbook", "-i", str(inventory_dir()), "-e", json.dumps(extra_vars), str(DEPLOY)]
        lines = []
        job = None
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(WORKERS_PLAY):
                job = hold_task(host)
            if line.startswith(DRAIN_TASK):
                time.sleep(2)
                seen["restart_began"] = time.time()
                seen["restart"] = host.run("systemctl restart redis-server").rc
                seen["restart_ended"] = time.time()
                time.sleep(2)
                break
        # The held task is released: the drain sees it finish on the restarted broker.
        if job:
            release_task(host, job)
        lines.extend(proc.stdout)
        proc.wait(timeout=600)
        seen["rc"] = proc.returncode
        seen["output"] = "".join(lines)
        report = Path("/tmp/taskstack-faults-redis.json")
        seen["report"] = json.loads(report.read_text()) if report.exists() else {}
        wait_for(lambda: consuming(host, colour), 60, interval=1, what="the host to consume after the deploy")
        return seen

    counts = run_load(host, restart_broker_in_drain)
    result = seen["report"].get("hosts", {}).get(host.backend.host, {})
    repeats = acks_lost_with_the_connection(counts, seen.get("restart_began", 0), seen.get("restart_ended", 0))
    print(f"Redis restarted in the drain: restart rc={seen.get('restart')}, deploy rc={seen['rc']}, "
          f"report {seen['report'].get('result')}, message {result.get('message')!r}; run twice"
          f" {sorted(counts['twice_jobs'])}, of them in flight on the lost connection {sorted(repeats)}")
    assert seen.get("restart") == 0, "the deploy never reached the drain"
    if seen["rc"] != 0:
        assert seen["report"]["result"] == "failed", seen["output"][-3000:]
        assert "Queues given back" in seen["output"], seen["output"][-3000:]
    else:
        assert seen["report"]["result"] == "ok"
    assert_load_proves_something(counts)
    # Nothing lost, nothing early, the broker clean; a repeat only where Celery cannot avoid one.
    assert {k: v for k, v in damage(counts).items() if k != "run_twice"} == {}
    assert set(counts["twice_jobs"]) == set(repeats), counts["twice_jobs"]


def acks_lost_with_the_connection(counts: dict, began: float, ended: float) -> dict:
    """The tasks that ran twice because their ack went down with the broker connection: sent
    before the restart ended (so delivered on the connection it cut), not finished before it
    began (so not yet acknowledged), run at most twice, and finished. Celery cannot ack a message
    on a connection that is gone (celery/celery#6654, "Couldn't ack ... connection already
    closed"); with acks_late the broker hands it out again after the visibility timeout. A
    repeat of any other task is a defect of the collection."""
    return {job: j for job, j in counts["twice_jobs"].items()
            if j["sent"] < ended and j["finishes"] and j["finishes"][0] > began and len(j["starts"]) <= 2}


def run_load(host, action) -> dict:
    """The load harness with this scenario's short tasks; a message whose worker died comes back
    after the 90 s visibility timeout, which the settle wait allows for."""
    return run_load_across(host, action, long_seconds=LONG_SECONDS, settle_seconds=150)
