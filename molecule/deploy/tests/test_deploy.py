"""taskstack.celery.deploy under load: nothing lost, nothing run twice, the broker left clean.

A producer in the container (demo.producer) keeps sending tasks of mixed length, some with a
countdown, to both pools before, during and after the deploy; every task writes its starts and
finishes to a ledger (Redis db 2). The deploy begins only once a task longer than a restart is
running. Counts are printed (pytest -s). The same harness with a naive restart is kept in the
suite and must see the loss: a harness that cannot fail proves nothing.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from stacklib import PROJECT, PlaybookRun, app_json, credential, inventory_dir, wait_for

DEPLOY = PROJECT / "playbooks" / "deploy.yml"
UNITS = ["celery-demo-worker@default-blue.service", "celery-demo-worker@slow-blue.service"]
UNIT_FILES = [
    "/etc/systemd/system/celery-demo-worker@.service",
    "/etc/systemd/system/celery-demo-worker@default-blue.service.d/pool.conf",
    "/etc/systemd/system/celery-demo-worker@slow-blue.service.d/pool.conf",
    "/etc/systemd/system/celery-demo-beat.service",
]
REDIS_PORT = 6381
LOCK = "/run/lock/taskstack-celery-deploy-demo.app"
# Longer than the deploy takes to reach the drain plus a restart of the workers (about 25 s and
# 20 s on this 2-core testbed): still running when the drain begins, so the drain waits for it.
LONG_TASK_SECONDS = 40
BASELINE_SECONDS = 10
AFTER_SECONDS = 6


def deploy(*args: str, extra_vars: dict | None = None, timeout: int = 600) -> tuple[PlaybookRun, dict]:
    """Run playbooks/deploy.yml as CI would; return the run and its JSON report."""
    with tempfile.TemporaryDirectory(prefix="taskstack-deploy-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = ["ansible-playbook", "-i", str(inventory_dir()),
               "-e", json.dumps({"celery_deploy_report": str(report), **(extra_vars or {})}), *args, str(DEPLOY)]
        started = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        run = PlaybookRun(proc.returncode, proc.stdout + proc.stderr)
        print(f"deploy {' '.join(args)} {extra_vars or ''}: rc={run.rc} in {time.time() - started:.1f} s")
        print("\n".join(line for line in run.output.splitlines() if line.startswith("celery_drain [")))
        return run, (json.loads(report.read_text()) if report.exists() else {})


def naive_restart(host) -> None:
    """What users do today: systemctl restart, on units with systemd's default KillMode."""
    dropin_dir = "/etc/systemd/system/celery-demo-worker@.service.d"
    host.run(f"mkdir -p {dropin_dir} && printf '[Service]\\nKillMode=control-group\\n' > {dropin_dir}/zz-naive.conf"
             " && systemctl daemon-reload")
    try:
        for unit in UNITS:
            assert host.run(f"systemctl restart {unit}").rc == 0
    finally:
        host.run(f"rm -f {dropin_dir}/zz-naive.conf && systemctl daemon-reload")


def ledger(host, code: str):
    return app_json(host, "import json\nfrom demo.tasks import ledger\ndb = ledger()\n" + code)


def broker_state(host) -> dict:
    """Queue lengths and Redis's `unacked` hash (messages delivered, not acknowledged), read as
    the admin user: the celery ACL user may not run HLEN."""
    import redis

    db = redis.Redis(port=REDIS_PORT, username="admin", password=credential(host.backend.host, "redis_admin_password"))
    return {"celery": db.llen("celery"), "slow": db.llen("slow"), "unacked": db.hlen("unacked")}


def main_pids(host) -> list[str]:
    return [host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip() for unit in UNITS]


def longest_pause(starts: list[float], begin: float, end: float) -> float:
    """Longest time in [begin, end] without a task start (window edges count as starts)."""
    points = [begin, *sorted(s for s in starts if begin <= s <= end), end]
    return max(b - a for a, b in zip(points, points[1:]))


def run_load_across(host, action) -> dict:
    """The harness: load before, during and after `action(host)`; count what happened."""
    run = uuid.uuid4().hex[:10]
    unit = f"demo-producer-{run}"
    started = host.run(
        f"systemd-run --unit {unit} -p User=celery -p Group=celery -p EnvironmentFile=/etc/celery/demo.env"
        f" -p WorkingDirectory=/srv/celery/app /opt/celery/venv/bin/python -m demo.producer {run} 3")
    assert started.rc == 0, started.stderr
    t_load = time.time()
    try:
        time.sleep(BASELINE_SECONDS)
        long_job = f"{run}-long"
        ledger(host, f"""
import time
from demo.tasks import work
db.hset("demo:run:{run}:sent", "{long_job}", json.dumps(
    {{"seconds": {LONG_TASK_SECONDS}, "countdown": 0, "queue": "celery", "sent": time.time(), "eta": None}}))
work.apply_async(("{long_job}", {LONG_TASK_SECONDS}), queue="celery")
print(json.dumps(1))
""")
        wait_for(lambda: ledger(host, f'print(json.dumps(db.llen("demo:started:{long_job}")))'), 30,
                 what="the long task to start")
        t_action = time.time()
        outcome = action(host)
        t_action_end = time.time()
        time.sleep(AFTER_SECONDS)
    finally:
        ledger(host, f'print(json.dumps(db.set("demo:run:{run}:stop", 1)))')
    wait_for(lambda: ledger(host, f'print(json.dumps(db.get("demo:run:{run}:done") is not None))'), 30,
             what="the producer to stop")
    read = f"""
sent = {{k.decode(): json.loads(v) for k, v in db.hgetall("demo:run:{run}:sent").items()}}
def times(kind, job):
    return [float(s.split()[0]) for s in db.lrange(f"demo:{{kind}}:{{job}}", 0, -1)]
print(json.dumps({{job: dict(meta, starts=times("started", job), finishes=times("finished", job))
                  for job, meta in sent.items()}}))
"""

    def settled():
        jobs = ledger(host, read)
        return jobs if all(j["finishes"] for j in jobs.values()) else None

    try:
        jobs = wait_for(settled, 90, interval=2, what="every sent task to finish")
    except AssertionError:
        jobs = ledger(host, read)
    time.sleep(2)  # a task killed at the end would be redelivered: let it show
    jobs = ledger(host, read)
    broker = broker_state(host)
    starts = [s for j in jobs.values() for s in j["starts"]]
    eta_jobs = [j for j in jobs.values() if j["eta"]]
    counts = {
        "sent": len(jobs),
        "completed": sum(1 for j in jobs.values() if j["finishes"]),
        "lost": sum(1 for j in jobs.values() if not j["finishes"]),
        "run_twice": sum(1 for j in jobs.values() if len(j["starts"]) > 1),
        "eta_sent": len(eta_jobs),
        "eta_early": sum(1 for j in eta_jobs if j["starts"] and min(j["starts"]) < j["eta"] - 0.05),
        "broker": broker,
        "baseline_pause": round(longest_pause(starts, t_load + 2, t_action), 2),
        "action_pause": round(longest_pause(starts, t_action, t_action_end), 2),
        "action_seconds": round(t_action_end - t_action, 2),
        "long_task": jobs[f"{run}-long"],
    }
    print(f"load across {getattr(action, '__name__', action)}: "
          + json.dumps({k: v for k, v in counts.items() if k != "long_task"}))
    return {**counts, "outcome": outcome}


def assert_nothing_lost(counts: dict) -> None:
    assert counts["sent"] > 50, "too little load to prove anything"
    assert counts["long_task"]["starts"][0] < counts["long_task"]["finishes"][-1]
    assert counts["lost"] == 0
    assert counts["run_twice"] == 0
    assert counts["completed"] == counts["sent"]
    assert counts["eta_early"] == 0
    assert counts["broker"] == {"celery": 0, "slow": 0, "unacked": 0}


@pytest.fixture(autouse=True)
def no_stale_lock(host):
    yield
    host.run(f"rm -rf {LOCK}")


def test_drain_deploy_under_load_loses_nothing_and_runs_nothing_twice(host):
    pids_before = main_pids(host)

    def drain_deploy(host):
        run, report = deploy()
        assert run.rc == 0, run.output[-4000:]
        return report

    counts = run_load_across(host, drain_deploy)
    report = counts["outcome"]
    result = report["hosts"][host.backend.host]
    print("report: " + json.dumps(result))
    assert report["result"] == "ok"
    assert result["drained"] is True and result["forced"] is False
    assert_nothing_lost(counts)
    # The long task was running when the drain began: the drain waited for it.
    waited = [t["id"] for p in result["pools"].values() for t in p["waited_for"]]
    assert waited, "the drain waited for nothing: the deploy did not happen under load"
    for pool in result["pools"].values():
        assert pool["new_pid"] != pool["old_pid"]
    assert main_pids(host) != pids_before
    # No task starts on this host from the cancel until the new workers consume: the pause is
    # at most what was still running (the long task) plus the code update and the restart.
    d = result["durations"]
    bound = LONG_TASK_SECONDS + d["update"] + d["stop"] + d["start"] + 5
    print(f"longest pause between starts: baseline {counts['baseline_pause']} s, during the deploy "
          f"{counts['action_pause']} s (bound {bound:.1f} s: long task {LONG_TASK_SECONDS} s + update "
          f"{d['update']} + stop {d['stop']} + start {d['start']} + 5)")
    assert counts["action_pause"] <= bound


def test_naive_restart_under_the_same_load_is_seen_losing_or_repeating_tasks(host):
    """Negative check: the harness must fail a plain `systemctl restart` with KillMode=control-group."""
    counts = run_load_across(host, naive_restart)
    long_task = counts["long_task"]
    print(f"naive restart: long task started {len(long_task['starts'])}x, finished {len(long_task['finishes'])}x")
    with pytest.raises(AssertionError):
        assert_nothing_lost(counts)
    assert counts["lost"] + counts["run_twice"] > 0


def test_check_mode_under_load_changes_no_queue_pid_or_unit_file(host):
    snapshot = f"sha256sum {' '.join(UNIT_FILES)}; systemctl show -p MainPID {' '.join(UNITS)}"
    queues = """
import json
from demo.app import app
print(json.dumps({k: sorted(q["name"] for q in v)
                  for k, v in (app.control.inspect(timeout=3).active_queues() or {}).items()}))
"""
    before = (host.run(snapshot).stdout, app_json(host, queues))
    app_json(host, 'import json\nfrom demo.tasks import work\nprint(json.dumps(work.delay("check-mode", 20).id))')
    run, report = deploy("--check")
    after = (host.run(snapshot).stdout, app_json(host, queues))
    print(f"check mode: rc={run.rc}, queues before {before[1]}, after {after[1]}")
    assert run.rc == 0, run.output[-3000:]
    assert report["check_mode"] is True
    assert after == before
    assert host.run(f"test -e {LOCK}").rc != 0


def test_a_second_deploy_is_refused_while_one_holds_the_lock(host):
    host.run(f"mkdir {LOCK} && echo 'ci pipeline 41' > {LOCK}/owner")
    pids = main_pids(host)
    run, _ = deploy()
    print(f"deploy while locked: rc={run.rc}, changed={run.changed()}")
    assert run.rc != 0
    assert "Another deploy of demo.app holds the lock" in run.output
    assert "ci pipeline 41" in run.output
    assert run.changed() == 0, run.recap()
    assert main_pids(host) == pids


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"celery_deploy_drain_timeout": "soon"}, "celery_deploy_drain_timeout"),
        ({"celery_deploy_strategy": "yolo"}, "celery_deploy_strategy"),
        ({"celery_deploy_tasks_file": "/nonexistent/update.yml"}, "celery_deploy_tasks_file must be"),
    ],
    ids=["drain-timeout-not-a-number", "unknown-strategy", "missing-tasks-file"],
)
def test_bad_input_fails_before_anything_changes(host, extra_vars, message):
    pids = main_pids(host)
    run, _ = deploy(extra_vars=extra_vars)
    assert run.rc != 0
    assert message in run.output, run.output[-2000:]
    assert run.changed() == 0, run.recap()
    assert main_pids(host) == pids


def test_task_longer_than_the_drain_timeout_is_forced_reported_and_runs_again_on_the_new_worker(host):
    """Cold shutdown only on timeout: the task that held the drain up is named in the report and,
    with acks_late + reject_on_worker_lost, requeued at once and run by the new worker (not one
    visibility timeout, an hour, later)."""
    job = f"forced-{uuid.uuid4().hex[:8]}"
    task_id = app_json(host, f"""
import json
from demo.tasks import hold
print(json.dumps(hold.apply_async(({job!r}, 600), queue="celery").id))
""")
    starts = f'print(json.dumps(db.llen("demo:started:{job}")))'
    wait_for(lambda: ledger(host, starts), 30, what="the held task to start")
    try:
        run, report = deploy(extra_vars={"celery_deploy_drain_timeout": 5})
        assert run.rc == 0, run.output[-4000:]
        result = report["hosts"][host.backend.host]
        print("report: " + json.dumps({k: result[k] for k in ("drained", "forced", "force", "durations")}))
        assert result["drained"] is False and result["forced"] is True
        assert result["force"]["cold_shutdown"] is True and result["force"]["sigkill"] == []
        assert task_id in [t["id"] for t in result["force"]["tasks_running_when_forced"]]
        wait_for(lambda: ledger(host, starts) >= 2, 60, what="the forced task to run again on the new worker")
    finally:
        ledger(host, f'print(json.dumps(db.set("demo:release:{job}", 1)))')
    wait_for(lambda: ledger(host, f'print(json.dumps(db.llen("demo:finished:{job}")))'), 30,
             what="the task to finish")
    time.sleep(2)
    counts = ledger(host, f'print(json.dumps([db.llen("demo:started:{job}"), db.llen("demo:finished:{job}")]))')
    print(f"forced task: started {counts[0]}x, finished {counts[1]}x")
    assert counts == [2, 1]
    assert broker_state(host) == {"celery": 0, "slow": 0, "unacked": 0}


def test_failed_code_update_gives_the_queues_back_and_fails_the_run(host, tmp_path):
    """Rescue: the update fails after the drain cancelled the consumers. The nodes consume their
    queues again, nothing was restarted, the lock is released and the run fails saying why."""
    update = tmp_path / "update.yml"
    update.write_text("---\n- name: Fetch the release that does not exist\n"
                      "  ansible.builtin.fail:\n    msg: release 9.9.9 not found\n")
    pids = main_pids(host)
    run, report = deploy(extra_vars={"celery_deploy_tasks_file": str(update), "celery_deploy_install": False})
    queues = app_json(host, """
import json
from demo.app import app
print(json.dumps({k: sorted(q["name"] for q in v)
                  for k, v in (app.control.inspect(timeout=3).active_queues() or {}).items()}))
""")
    result = report.get("hosts", {}).get(host.backend.host, {})
    print(f"failed update: rc={run.rc}, report result {report.get('result')}, message {result.get('message')!r},"
          f" queues after {queues}")
    assert run.rc != 0
    assert "release 9.9.9 not found" in run.output
    assert "Queues given back: ['default-blue@" in run.output
    assert queues == {f"default-blue@{host.backend.host}": ["celery"], f"slow-blue@{host.backend.host}": ["slow"]}
    assert main_pids(host) == pids
    assert report["result"] == "failed" and result["failed"] is True
    assert host.run(f"test -e {LOCK}").rc != 0, "the rescue left the lock behind"
