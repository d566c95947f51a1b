"""The load harness of the deploy and fault scenarios: a producer sends tasks before, during
and after an action (a deploy, a restart, a fault), every task writes its starts, attempts and
finishes to a ledger (Redis db 2), and the counts say what the action cost: sent, completed,
lost, run twice, retries, countdowns run early, what is left in the queues and kombu's `unacked`
hash, and the longest pause between task starts against a no-deploy stretch of the same run.

The app is the demo app (tests/demo_app) with two pools: default (queue celery) and slow (slow).
Imported by the scenarios' tests (conftest.py puts molecule/shared/tests on sys.path).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from stacklib import (
    PROJECT,
    PlaybookRun,
    app_json,
    credential,
    inventory_dir,
    longest_gap,
    longest_pause,
    wait_for,
)

DEPLOY = PROJECT / "playbooks" / "deploy.yml"
POOLS = ["default", "slow"]
FACT = "/etc/ansible/facts.d/celery_demo.fact"
LOCK = "/run/lock/taskstack-celery-deploy-demo.app"
# Started before the no-deploy baseline stretch (BASELINE_SECONDS) and still running when the
# drain begins (the deploy takes about 25 s to reach it on this 2-core testbed), so the drain
# waits for it.
LONG_TASK_SECONDS = 55
WARMUP_SECONDS = 3
BASELINE_SECONDS = 12
AFTER_SECONDS = 6


def redis_port() -> int:
    """The scenario's Redis port (redis_port in its molecule.yml group_vars)."""
    import yaml

    for name in ("all", "all.yml"):
        path = inventory_dir() / "group_vars" / name
        if path.exists():
            return int((yaml.safe_load(path.read_text()) or {}).get("redis_port", 6379))
    return 6379


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


def live_colour(host) -> str:
    """The colour whose pool instances serve, as the worker role and the deploy record it."""
    return json.loads(host.file(FACT).content_string)["live_colour"]


def units(colour: str) -> list[str]:
    return [f"celery-demo-worker@{pool}-{colour}.service" for pool in POOLS]


def unit_files(colour: str) -> list[str]:
    return ["/etc/systemd/system/celery-demo-worker@.service", "/etc/systemd/system/celery-demo-beat.service",
            *(f"/etc/systemd/system/{unit}.d/pool.conf" for unit in units(colour))]


def naive_restart(host) -> None:
    """What users do today: systemctl restart, on units with systemd's default KillMode."""
    dropin_dir = "/etc/systemd/system/celery-demo-worker@.service.d"
    host.run(f"mkdir -p {dropin_dir} && printf '[Service]\\nKillMode=control-group\\n' > {dropin_dir}/zz-naive.conf"
             " && systemctl daemon-reload")
    try:
        for unit in units(live_colour(host)):
            assert host.run(f"systemctl restart {unit}").rc == 0
    finally:
        host.run(f"rm -f {dropin_dir}/zz-naive.conf && systemctl daemon-reload")


def ledger(host, code: str):
    return app_json(host, "import json\nfrom demo.tasks import ledger\ndb = ledger()\n" + code)


def broker_state(host) -> dict:
    """Queue lengths and Redis's `unacked` hash (messages delivered, not acknowledged), read as
    the admin user: the celery ACL user may not run HLEN."""
    import redis

    db = redis.Redis(port=redis_port(), username="admin", password=credential(host.backend.host, "redis_admin_password"))
    return {"celery": db.llen("celery"), "slow": db.llen("slow"), "unacked": db.hlen("unacked")}


CLEAN_BROKER = {"celery": 0, "slow": 0, "unacked": 0}


def settled_broker_state(host, seconds: float = 15) -> dict:
    """The broker once it is clean, or as it still is after `seconds`. Beat's tick (every 2 s)
    is briefly in a queue or `unacked` while it runs: a snapshot can catch it. A message left
    behind by a deploy stays there."""
    try:
        return wait_for(lambda: (state := broker_state(host)) == CLEAN_BROKER and state, seconds,
                        interval=0.5, what="a clean broker")
    except AssertionError:
        return broker_state(host)


def main_pids(host, colour: str | None = None) -> list[str]:
    return [host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip()
            for unit in units(colour or live_colour(host))]


def active_queues(host) -> dict:
    return app_json(host, """
import json
from demo.app import app
print(json.dumps({k: sorted(q["name"] for q in v)
                  for k, v in (app.control.inspect(timeout=3).active_queues() or {}).items()}))
""")


def task_starts(job: dict) -> list[float]:
    """Every start of a ledger job: a retried task's failed attempts too."""
    return [float(t) for _number, t in job.get("attempts", [])] + [float(t) for t in job.get("starts", [])]


def ran_twice(job: dict) -> bool:
    """A ledger job ran more than once: two starts, or one attempt number twice."""
    numbers = [n for n, _start in job.get("attempts", [])]
    return len(job.get("starts", [])) > 1 or len(numbers) != len(set(numbers))


def run_load_across(host, action, long_seconds: float = LONG_TASK_SECONDS, settle_seconds: float = 90,
                    rate: float = 3) -> dict:
    """The harness: load before, during and after `action(host)` (`rate` tasks a second); count
    what happened. The counts carry the run's ledger too (`jobs`, what `make demo` draws).

    The baseline stretch (no deploy) runs while the long task already holds a worker process,
    as it does when the action begins: both stretches see the same capacity."""
    run = uuid.uuid4().hex[:10]
    unit = f"demo-producer-{run}"
    started = host.run(
        f"systemd-run --unit {unit} -p User=celery -p Group=celery -p EnvironmentFile=/etc/celery/demo.env"
        f" -p WorkingDirectory=/srv/celery/app /opt/celery/venv/bin/python -m demo.producer {run} {rate}")
    assert started.rc == 0, started.stderr
    try:
        time.sleep(WARMUP_SECONDS)
        long_job = f"{run}-long"
        ledger(host, f"""
import time
from demo.tasks import work
db.hset("demo:run:{run}:sent", "{long_job}", json.dumps(
    {{"seconds": {long_seconds}, "countdown": 0, "queue": "celery", "sent": time.time(), "eta": None}}))
work.apply_async(("{long_job}", {long_seconds}), queue="celery")
print(json.dumps(1))
""")
        wait_for(lambda: ledger(host, f'print(json.dumps(db.llen("demo:started:{long_job}")))'), 30,
                 what="the long task to start")
        t_baseline = time.time()
        time.sleep(BASELINE_SECONDS)
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
def attempts(job):
    return [[int(s.split()[0]), float(s.split()[1])] for s in db.lrange(f"demo:attempts:{{job}}", 0, -1)]
print(json.dumps({{job: dict(meta, starts=times("started", job), finishes=times("finished", job),
                            attempts=attempts(job))
                  for job, meta in sent.items()}}))
"""

    def settled():
        jobs = ledger(host, read)
        return jobs if all(j["finishes"] for j in jobs.values()) else None

    try:
        jobs = wait_for(settled, settle_seconds, interval=2, what="every sent task to finish")
    except AssertionError:
        jobs = ledger(host, read)
    time.sleep(2)  # a task killed at the end would be redelivered: let it show
    jobs = ledger(host, read)
    broker = settled_broker_state(host)
    for j in jobs.values():
        j["attempt_starts"] = task_starts(j)
    starts = [s for j in jobs.values() for s in j["attempt_starts"]]
    eta_jobs = [j for j in jobs.values() if j["eta"]]
    retried = [j for j in jobs.values() if j.get("retries")]

    counts = {
        "sent": len(jobs),
        "completed": sum(1 for j in jobs.values() if j["finishes"]),
        "lost": sum(1 for j in jobs.values() if not j["finishes"]),
        "run_twice": sum(1 for j in jobs.values() if ran_twice(j)),
        # Which ones, with what the ledger saw of them: the reason is in the workers' journal.
        "lost_jobs": {k: {"sent": j["sent"], "queue": j["queue"], "seconds": j["seconds"], "starts": j["starts"],
                          "attempts": j["attempts"]} for k, j in jobs.items() if not j["finishes"]},
        "twice_jobs": {k: {"sent": j["sent"], "starts": j["starts"], "finishes": j["finishes"], "attempts": j["attempts"]}
                       for k, j in jobs.items() if ran_twice(j)},
        "retried_sent": len(retried),
        # finished after exactly the failed attempts it was sent to make
        "retried_ok": sum(1 for j in retried if j["finishes"] and sorted(n for n, _start in j["attempts"])
                          == list(range(j["retries"]))),
        "eta_sent": len(eta_jobs),
        "eta_early": sum(1 for j in eta_jobs if j["attempt_starts"] and min(j["attempt_starts"]) < j["eta"] - 0.05),
        "broker": broker,
        "baseline_pause": round(longest_pause(starts, t_baseline, t_action), 2),
        "action_pause": round(longest_pause(starts, t_action, t_action_end), 2),
        "baseline_began": t_baseline,
        "action_began": t_action,
        "action_seconds": round(t_action_end - t_action, 2),
        # The action's longest pause: from the last task start before it to the first after.
        "action_gap_at": longest_gap(starts, t_action, t_action_end),
        "long_task": jobs[f"{run}-long"],
        "run": run,
        "jobs": jobs,
    }
    print(f"load across {getattr(action, '__name__', action)}: "
          + json.dumps({k: v for k, v in counts.items()
                        if k not in ("long_task", "baseline_began", "action_began", "action_gap_at", "jobs")}))
    record(getattr(action, "__name__", str(action)), counts, outcome)
    return {**counts, "outcome": outcome}


# With this set (benchmarks/deploy_compare.sh), every run_load_across appends its segment to
# that file, one JSON line each: what scripts/demo_picture.py draws.
RECORD_ENV = "TASKSTACK_LOAD_RECORD"


def segment(name: str, counts: dict, outcome) -> dict:
    """A run of the harness as scripts/demo_picture.py reads it: the ledger, the deploy report
    (when the action returned one), the no-deploy stretch and the action's times."""
    began = float(counts["action_began"])
    return {
        "strategy": name,
        "jobs": counts["jobs"],
        "report": outcome if isinstance(outcome, dict) and "hosts" in outcome else None,
        "baseline": [float(counts["baseline_began"]), began],
        "action": [began, began + float(counts["action_seconds"])],
    }


def record(name: str, counts: dict, outcome) -> None:
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(segment(name, counts, outcome)) + "\n")


def assert_load_proves_something(counts: dict) -> None:
    """The run had the load the checks need: enough tasks, some with a countdown, some that
    retry, and the long task running when the action began."""
    assert counts["sent"] > 50, "too little load to prove anything"
    assert counts["eta_sent"] > 0 and counts["retried_sent"] > 0, {k: v for k, v in counts.items() if k != "jobs"}
    long_task = counts["long_task"]
    assert long_task["starts"] and long_task["starts"][0] < counts["action_began"] and \
        (not long_task["finishes"] or long_task["finishes"][-1] > counts["action_began"]), \
        "the long task was not running when the action began"


def damage(counts: dict) -> dict:
    """What happened to the load that must not: empty when every task ran exactly once, none
    before its countdown, every retry as sent, and the broker was left clean."""
    found = {
        "lost": counts["lost"],
        "run_twice": counts["run_twice"],
        "eta_early": counts["eta_early"],
        "retried_wrong": counts["retried_sent"] - counts["retried_ok"],
        "broker_left": {k: v for k, v in counts["broker"].items() if v},
    }
    return {k: v for k, v in found.items() if v}


def assert_nothing_lost(counts: dict) -> None:
    assert_load_proves_something(counts)
    assert damage(counts) == {}
