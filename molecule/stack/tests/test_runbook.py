"""The runbook playbooks on the running stack (docs/runbook.md): a temporary pool that drains a
backlog and leaves with a warm stop, a purge that refuses without its confirmation and keeps what
it removed, and a stuck pool's report and graceful restart.

Every task is counted in the demo app's ledger (loadlib.ledger, loadlib.ran_twice): sent,
completed, lost, run twice. Ports and credentials come from the scenario's inventory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import time
import uuid

import redis
from loadlib import ledger, ran_twice, redis_port
from stacklib import DEBIAN12_ONLY, PROJECT, PlaybookRun, converge, converge_command, credential, wait_for

PLAYBOOKS = PROJECT / "playbooks"

pytestmark = DEBIAN12_ONLY


def _names():
    """plugins/filter/celery_names.py as plain Python: the names the roles build."""
    spec = importlib.util.spec_from_file_location("celery_names", PROJECT / "plugins" / "filter" / "celery_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NAMES = _names()
SLOW_UNIT = NAMES.worker_unit("demo", "slow", "blue")
CONFIGURED_UNITS = [NAMES.worker_unit("demo", "default", "blue"), SLOW_UNIT]
TEMPORARY_UNIT = NAMES.temporary_worker_unit("demo", "backlog")
TEMPORARY_DROPIN = NAMES.temporary_worker_dropin_dir("demo", "backlog")
TEMPORARY_MARKER = NAMES.temporary_worker_marker("demo", "backlog")
TEMPORARY_NODE = NAMES.temporary_worker_nodename("backlog", "")


def runbook(name: str, extra_vars: dict | None = None, timeout: int = 300) -> PlaybookRun:
    started = time.time()
    run = converge(extra_vars=extra_vars, playbook=PLAYBOOKS / f"{name}.yml", timeout=timeout)
    print(f"{name} {extra_vars or ''}: rc={run.rc} in {time.time() - started:.1f} s")
    return run


def messages(run: PlaybookRun) -> str:
    """The "msg" lines of a run's output (what the playbook prints for the operator)."""
    return "\n".join(line for line in run.output.splitlines() if '"msg"' in line or line.startswith(' "'))


def main_pid(host, unit: str) -> str:
    return host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip()


def admin_redis(host) -> redis.Redis:
    return redis.Redis(port=redis_port(), username="admin",
                       password=credential(host.backend.host, "redis_admin_password"))


def send(host, jobs: list[str], seconds: float, queue: str) -> None:
    ledger(host, f"""
from demo.tasks import work
for job in {jobs!r}:
    work.apply_async((job, {seconds}), queue={queue!r})
print(json.dumps(len({jobs!r})))
""")


def count(host, jobs: list[str]) -> dict:
    """sent, completed, lost, run twice, and the nodes that ran them, from the ledger."""
    ledger_jobs = ledger(host, f"""
print(json.dumps({{job: {{"starts": [s.decode() for s in db.lrange(f"demo:started:{{job}}", 0, -1)],
                         "finishes": [s.decode() for s in db.lrange(f"demo:finished:{{job}}", 0, -1)]}}
                  for job in {jobs!r}}}))
""")
    return {
        "sent": len(jobs),
        "completed": sum(1 for j in ledger_jobs.values() if j["finishes"]),
        "lost": sum(1 for j in ledger_jobs.values() if not j["finishes"]),
        "run_twice": sum(1 for j in ledger_jobs.values() if ran_twice(j)),
        "nodes": sorted({s.split()[1] for j in ledger_jobs.values() for s in j["starts"]}),
    }


def all_finished(host, jobs: list[str]) -> dict | None:
    counts = count(host, jobs)
    return counts if counts["completed"] == counts["sent"] else None


def hold(host, job: str, queue: str) -> None:
    """A task that runs until the test releases it: certainly running when the action begins."""
    ledger(host, f"""
from demo.tasks import hold
print(json.dumps(hold.apply_async(({job!r}, 120), queue={queue!r}).id))
""")
    wait_for(lambda: ledger(host, f'print(json.dumps(db.llen("demo:started:{job}")))'), 30, what=f"{job} to start")


def run_releasing(host, job: str, node: str, extra_vars: dict, playbook) -> PlaybookRun:
    """Run a playbook; release the held `job` 2 s after the drain of `node` began (the drain's
    progress line): a graceful stop waits for it, a kill loses it."""
    cmd = converge_command(extra_vars=extra_vars, playbook=playbook)
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ)
    output, released = [], False
    for line in proc.stdout:
        output.append(line)
        if not released and line.startswith("celery_drain [") and node in line and "stopped consuming" in line:
            time.sleep(2)
            ledger(host, f'print(json.dumps(db.set("demo:release:{job}", 1)))')
            released = True
    run = PlaybookRun(proc.wait(timeout=300), "".join(output))
    print(f"{playbook.name} {extra_vars}: rc={run.rc} in {time.time() - started:.1f} s, released: {released}")
    if not released:  # let the task end, so it does not hold a worker through the next tests
        ledger(host, f'print(json.dumps(db.set("demo:release:{job}", 1)))')
    return run


def test_backlog_pool_drains_the_backlog_survives_a_converge_and_leaves_with_a_warm_stop(host):
    before = {unit: main_pid(host, unit) for unit in CONFIGURED_UNITS}
    added = runbook("backlog", {"celery_runbook_backlog_queues": ["slow", "overflow"],
                                "celery_runbook_backlog_concurrency": 3})
    assert added.rc == 0, added.output[-3000:]
    assert host.service(TEMPORARY_UNIT).is_running
    marker = json.loads(host.file(TEMPORARY_MARKER).content_string)
    assert marker["temporary"] and marker["queues"] == ["slow", "overflow"]
    temporary_pid = main_pid(host, TEMPORARY_UNIT)

    # A backlog on the slow queue (one process of its own): the temporary node takes its share.
    run = uuid.uuid4().hex[:8]
    backlog = [f"backlog-{run}-{i}" for i in range(16)]
    send(host, backlog, 1, "slow")
    # site.yml while the temporary pool runs: its clean-up of pools missing from the inventory
    # must leave it alone, and nothing restarts.
    converged = converge(timeout=600)
    assert converged.rc == 0, converged.output[-3000:]
    assert host.service(TEMPORARY_UNIT).is_running
    assert main_pid(host, TEMPORARY_UNIT) == temporary_pid
    assert host.file(TEMPORARY_MARKER).exists
    counts = wait_for(lambda: all_finished(host, backlog), 60, interval=1, what="the backlog to drain")
    print(f"backlog: {counts}")
    assert counts["lost"] == 0 and counts["run_twice"] == 0, counts
    assert TEMPORARY_NODE + host.backend.host in counts["nodes"], counts

    # The removal while the temporary node runs a task (a queue only it consumes): the drain
    # must wait for it and the stop be warm; it is let go only once the drain waits.
    held = f"held-{run}"
    hold(host, held, "overflow")
    removed = run_releasing(host, held, TEMPORARY_NODE, {"celery_runbook_backlog_state": "absent"},
                            PLAYBOOKS / "backlog.yml")
    assert removed.rc == 0, removed.output[-3000:]
    print(messages(removed))
    counts = wait_for(lambda: all_finished(host, [held]), 30, interval=1, what="the held task to finish")
    print(f"held task across the removal: {counts}")
    assert counts["lost"] == 0 and counts["run_twice"] == 0, counts
    assert counts["nodes"] == [TEMPORARY_NODE + host.backend.host], counts
    assert "(waited for 1 task(s)), then stopped warm" in removed.output
    assert not host.service(TEMPORARY_UNIT).is_running
    assert not host.file(TEMPORARY_DROPIN).exists
    assert {unit: main_pid(host, unit) for unit in CONFIGURED_UNITS} == before

    again = runbook("backlog", {"celery_runbook_backlog_state": "absent"})
    assert again.rc == 0 and again.changed() == 0, again.output[-3000:]


def test_purge_refuses_without_its_confirmation_and_saves_exactly_what_it_purged(host, tmp_path):
    db = admin_redis(host)
    ledger(host, """
from demo.tasks import add
for i, priority in enumerate([0, 0, 5, 9, 3]):
    add.apply_async((i, 1), queue="parked", priority=priority)
add.apply_async((0, 0), queue="parked_other")
print(json.dumps(1))
""")
    keys = [k.decode() for k in db.keys("parked*")]

    def snapshot() -> dict:
        return {key: [m.decode() for m in db.lrange(key, 0, -1)] for key in keys}

    held = snapshot()
    assert sum(map(len, held.values())) == 6 and len(held) > 2, held  # priority sub-queues in use
    report_dir = tmp_path / "runbook"
    for extra in ({}, {"celery_runbook_purge_confirm": "celery"}):
        refused = runbook("purge_queue", {"celery_runbook_purge_queue": "parked", "celery_runbook_report_dir": str(report_dir),
                                          **extra})
        assert refused.rc != 0 and "Refused, nothing was read or purged" in refused.output, refused.output[-2000:]
        assert snapshot() == held
        assert not report_dir.exists()

    purged = runbook("purge_queue", {"celery_runbook_purge_queue": "parked", "celery_runbook_purge_confirm": "parked",
                                     "celery_runbook_report_dir": str(report_dir)})
    assert purged.rc == 0, purged.output[-3000:]
    print(messages(purged))
    assert "Purged 5 message(s) of queue 'parked'" in purged.output
    files = list(report_dir.iterdir())
    assert len(files) == 1
    assert stat.S_IMODE(report_dir.stat().st_mode) == 0o700 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    saved = json.loads(files[0].read_text())
    assert {key: [m["body"] for m in info["messages"]] for key, info in saved["keys"].items() if info["count"]} == \
        {key: bodies for key, bodies in held.items() if key != "parked_other" and bodies}
    assert snapshot() == {key: (held[key] if key == "parked_other" else []) for key in keys}
    db.delete("parked_other")

    again = runbook("purge_queue", {"celery_runbook_purge_queue": "parked", "celery_runbook_purge_confirm": "parked",
                                    "celery_runbook_report_dir": str(report_dir)})
    assert again.rc == 0 and again.changed() == 0 and "is empty" in again.output, again.output[-2000:]


def test_stuck_worker_reports_the_running_task_and_restarts_the_pool_gracefully(host, tmp_path):
    job = f"stuck-{uuid.uuid4().hex[:8]}"
    hold(host, job, "slow")
    pid = main_pid(host, SLOW_UNIT)
    report_dir = tmp_path / "runbook"
    extra_vars = {"celery_runbook_stuck_pool": "slow", "celery_runbook_drain_timeout": 60,
                  "celery_runbook_report_dir": str(report_dir)}
    run = run_releasing(host, job, NAMES.worker_nodename("slow", "blue", ""), extra_vars, PLAYBOOKS / "stuck_worker.yml")
    assert run.rc == 0, run.output[-3000:]
    print(messages(run))
    assert "running: demo.tasks.hold[" in run.output
    report = json.loads(next(report_dir.glob("stuck-*-slow-*.json")).read_text())
    assert [t["name"] for t in report["active"]] == ["demo.tasks.hold"], report
    assert report["stack_dump"] in ("py-spy", "faulthandler") or "No stack dump" in report["stack_note"]
    assert "warm: the drain waited" in run.output and "FORCED" not in run.output
    counts = wait_for(lambda: all_finished(host, [job]), 30, what="the held task to finish")
    print(f"held task across the restart: {counts}")
    assert counts["completed"] == 1 and counts["run_twice"] == 0, counts
    assert main_pid(host, SLOW_UNIT) not in ("0", pid)
