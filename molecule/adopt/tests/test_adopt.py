"""Taking over the runbook's stack (docs/adopt.md) under load, counted.

prepare.yml leaves the host as the runbook does: a root worker unit celery-demo.service
(--concurrency=4, embedded beat -B), a root flower.service on 0.0.0.0:5558 with the broker URL
on its command line, Redis on 6384 without a password holding data, the demo app with acks_late
off. A producer without credentials (the web app) sends tasks the whole time. The tests run in
file order and build on each other: the plan in --check, the refusals, step 1 under load, its
second run, then step 2 (refused while the web app connects without credentials, accepted once
it uses the collection's environment file) and its second run.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid

from loadlib import broker_state
from stacklib import app_json, converge, converge_command, state_snapshot, wait_for

RUNBOOK = {"env_file": "/etc/runbook/demo.env", "app_dir": "/srv/runbook/app", "venv": "/opt/runbook/venv"}
COLLECTION = {"env_file": "/etc/celery/demo.env", "app_dir": "/srv/celery/app", "venv": "/opt/celery/venv"}
OLD_UNITS = ["celery-demo.service", "flower.service"]
KEPT_DIR = "/etc/systemd/system/taskstack-adopted"
REDIS_PORT = 6384
FLOWER_PORT = 5558
# Only the preflight play (tagged always) runs: the plan, without any change.
PLAN_ONLY = ("--tags", "taskstack_plan_only")
RATE = 3
BEAT_SCHEDULE = 2.0

STATE: dict = {}


def ledger(host, code: str, where: dict):
    return app_json(host, "import json\nfrom demo.tasks import ledger\ndb = ledger()\n" + code, **where)


def start_producer(host, run: str, where: dict, user: str = "") -> None:
    """The web app: demo.producer as a transient unit, with the given environment file."""
    props = f"-p EnvironmentFile={where['env_file']} -p WorkingDirectory={where['app_dir']}"
    if user:
        props += f" -p User={user} -p Group={user}"
    started = host.run(f"systemd-run --unit adopt-producer-{run} {props} {where['venv']}/bin/python -m demo.producer {run} {RATE}")
    assert started.rc == 0, started.stderr


def stop_producer(host, run: str, where: dict) -> None:
    ledger(host, f'print(json.dumps(db.set("demo:run:{run}:stop", 1)))', where)
    # The producer writes `done` only when its loop ended normally: a refused publish (NOAUTH
    # after its retries) kills it, and this wait fails.
    wait_for(lambda: ledger(host, f'print(json.dumps(db.get("demo:run:{run}:done") is not None))', where), 40,
             what=f"producer {run} to stop normally (it dies when the broker refuses it)")


READ_JOBS = """
sent = {{k.decode(): json.loads(v) for k, v in db.hgetall("demo:run:{run}:sent").items()}}
def times(kind, job):
    return [float(s.split()[0]) for s in db.lrange(f"demo:{{kind}}:{{job}}", 0, -1)]
def attempts(job):
    return [int(s.split()[0]) for s in db.lrange(f"demo:attempts:{{job}}", 0, -1)]
print(json.dumps({{job: dict(meta, starts=times("started", job), finishes=times("finished", job),
                            attempts=attempts(job)) for job, meta in sent.items()}}))
"""


def counts(host, run: str, where: dict, settle: float = 120) -> dict:
    """Sent, completed, lost and run twice for one producer run, once every task finished (or
    `settle` seconds passed)."""
    def read():
        return ledger(host, READ_JOBS.format(run=run), where)

    try:
        jobs = wait_for(lambda: (j := read()) and all(x["finishes"] for x in j.values()) and j, settle,
                        interval=2, what="every sent task to finish")
    except AssertionError:
        jobs = read()
    time.sleep(2)
    jobs = read()
    twice = {k: j for k, j in jobs.items() if len(j["starts"]) > 1 or len(j["attempts"]) != len(set(j["attempts"]))}
    result = {
        "sent": len(jobs),
        "completed": sum(1 for j in jobs.values() if j["finishes"]),
        "lost": sum(1 for j in jobs.values() if not j["finishes"]),
        "run_twice": len(twice),
        "lost_jobs": {k: j for k, j in jobs.items() if not j["finishes"]},
        "twice_jobs": twice,
        "jobs": jobs,
    }
    print(f"producer run {run}: " + json.dumps({k: v for k, v in result.items() if k != "jobs"}))
    return result


def ticks(host, where: dict) -> list[float]:
    """When beat fired each tick (recorded as beat publishes it, demo/app.py). Not when a worker
    ran it: step 1 pauses consumption between the old worker's drain and the new workers' start,
    and the ticks the old beat fired meanwhile run in a burst once they consume."""
    return ledger(host, 'print(json.dumps([float(t) for t in db.lrange("demo:tick_sent", 0, -1)]))', where)


def redis_errors(host) -> str:
    """INFO errorstats as the admin user: a client refused (NOAUTH, NOPERM, WRONGPASS) shows here."""
    import redis

    from stacklib import credential

    db = redis.Redis(port=REDIS_PORT, username="admin", password=credential(host.backend.host, "redis_admin_password"))
    return json.dumps(db.info("errorstats"))


def runbook_snapshot(host) -> dict:
    return state_snapshot(host, ["/etc/systemd/system/celery-demo.service", "/etc/systemd/system/flower.service",
                                 "/etc/redis/redis.conf"], [*OLD_UNITS, "redis-server.service"])


def test_check_mode_prints_the_plan_and_changes_nothing(host):
    before = runbook_snapshot(host)
    hostname = host.check_output("hostname")
    run = converge("--check", *PLAN_ONLY)
    assert run.rc == 0, run.output[-3000:]
    for expected in [
        f"celery-demo.service (celery worker, runs as root): drain celery@{hostname}",
        "(stop consuming, wait for its tasks) before Redis restarts",
        "and its embedded beat (-B)",
        "This run restarts Redis on",
        "site.yml drains and stops the old Celery workers named in celery_adopt_units before the restart",
        f"move /etc/systemd/system/celery-demo.service (and its drop-ins) to {KEPT_DIR}",
        "flower.service (celery flower, runs as root): stop it before the collection's Flower starts",
        "flower.service has the broker URL on its command line",
        f"port {FLOWER_PORT} (flower) is held by flower.service",
        f"Redis on port {REDIS_PORT} answers without a password and holds",
        "redis_adopt_anonymous is true: the ACL users are added and anonymous access stays on",
    ]:
        assert expected in run.output, expected
    assert runbook_snapshot(host) == before


def test_a_running_unit_not_named_stops_the_run_before_any_change(host):
    before = runbook_snapshot(host)
    run = converge(*PLAN_ONLY, extra_vars={"celery_adopt_units": ["flower.service"]})
    assert run.rc != 0
    assert "celery-demo.service run Celery for demo.app" in run.output and "Nothing was changed" in run.output
    assert run.changed() == 0
    assert runbook_snapshot(host) == before


def test_turning_anonymous_access_off_at_once_is_refused_naming_the_clients(host):
    before = runbook_snapshot(host)
    run = converge(*PLAN_ONLY, extra_vars={"redis_adopt_anonymous": False})
    assert run.rc != 0
    # The old worker and Flower are connected without credentials.
    assert "clients connected without credentials" in run.output, run.output[-3000:]
    assert runbook_snapshot(host) == before


def test_step1_under_load_loses_nothing_runs_nothing_twice_and_never_refuses_the_web_app(host):
    run = uuid.uuid4().hex[:8]
    start_producer(host, run, RUNBOOK)
    try:
        step1_under_load(host, run)
    finally:
        # Whatever failed, the producer and the held task must not outlive the test.
        host.run(f"redis-cli -p {REDIS_PORT} -n 2 set demo:release:{run}-hold 1")
        host.run(f"systemctl stop adopt-producer-{run}")


def old_worker_log(host) -> str:
    """What the runbook's worker said about the broker and its own state (a crash on a broker
    restart, a warm shutdown waiting for a task), without the task lines and tracebacks."""
    return host.run("journalctl -u celery-demo.service --no-pager -o short-precise | "
                    "grep -E 'MainProcess|systemd|celery\\[[0-9]+\\]: [A-Za-z]+Error' | "
                    "grep -vE 'demo.tasks|Task |Traceback' | tail -n 60").stdout


def step1_under_load(host, run: str) -> None:
    time.sleep(5)
    # A task the old worker is running when its drain begins, released only once the drain has
    # been seen waiting for it: a stop without a drain kills it (acks_late is off: lost).
    hold_job = f"{run}-hold"
    ledger(host, f"""
import time
from demo.tasks import hold
db.hset("demo:run:{run}:sent", "{hold_job}", json.dumps({{"seconds": 0, "countdown": 0, "queue": "celery",
        "sent": time.time(), "eta": None, "retries": 0}}))
hold.apply_async(("{hold_job}", 900), queue="celery")
print(json.dumps(1))
""", RUNBOOK)
    wait_for(lambda: ledger(host, f'print(json.dumps(db.llen("demo:started:{hold_job}")))', RUNBOOK), 30,
             what="the held task to start on the old worker")
    t_begin = time.time()
    lines: list[str] = []
    drain_waits = threading.Event()
    # Unbuffered: the drain's progress lines must arrive while it waits, not at the end.
    proc = subprocess.Popen(converge_command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def read_output():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("celery_drain [") and "demo.tasks.hold" in line:
                drain_waits.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        while not drain_waits.wait(1) and proc.poll() is None:
            pass
        assert drain_waits.is_set(), ("the drain never reported the held task:\n" + "".join(lines)[-6000:]
                                      + "\nthe old worker's journal (tracebacks left out):\n" + old_worker_log(host))
        t_drain_seen = time.time()
        time.sleep(4)
        still_active = host.run("systemctl is-active celery-demo.service").stdout.strip()
        ledger(host, f'print(json.dumps(db.set("demo:release:{hold_job}", 1)))', RUNBOOK)
        proc.wait(900)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    t_end = time.time()
    output = "".join(lines)
    print("\n".join(line for line in output.splitlines() if line.startswith("celery_drain [")))
    assert proc.returncode == 0, output[-6000:]
    assert still_active == "active", "the old worker stopped while its drain still waited for a task"
    time.sleep(6)
    stop_producer(host, run, RUNBOOK)
    result = counts(host, run, RUNBOOK)
    hold = result["jobs"][hold_job]
    all_ticks = ticks(host, RUNBOOK)
    STATE["step1"] = {"output": output, "seconds": round(t_end - t_begin, 1), "ticks": all_ticks,
                      "t_begin": t_begin, "t_end": t_end}
    print(f"step 1: {t_end - t_begin:.1f} s, sent {result['sent']}, completed {result['completed']}, "
          f"lost {result['lost']}, run twice {result['run_twice']}")
    assert result["sent"] > 100, "too little load to prove anything"
    assert result["lost"] == 0, result["lost_jobs"]
    assert result["run_twice"] == 0, result["twice_jobs"]
    assert len(hold["starts"]) == 1 and hold["finishes"] and hold["finishes"][0] > t_drain_seen
    # Nothing the web app or a worker sent was refused by the broker.
    errors = redis_errors(host)
    assert "NOAUTH" not in errors and "NOPERM" not in errors and "WRONGPASS" not in errors, errors


def test_beat_fired_once_per_schedule_through_the_takeover(host):
    step = STATE["step1"]
    window = 20.0
    during = [t for t in step["ticks"] if step["t_begin"] - 10 <= t <= step["t_end"] + 6]
    # Two beats (the old -B and the new unit) fire about twice as often as the schedule.
    busiest = max(sum(1 for t in during if start <= t < start + window) for start in during)
    print(f"beat: {len(during)} ticks over {step['t_end'] - step['t_begin'] + 16:.0f} s, "
          f"at most {busiest} in {window:.0f} s (schedule every {BEAT_SCHEDULE} s)")
    assert busiest <= window / BEAT_SCHEDULE + 2
    assert any(t > step["t_end"] for t in step["ticks"]), "no tick from the collection's beat"
    old_stopped = host.run("journalctl -o short-unix -u celery-demo.service | grep -E 'Stopped|Deactivated' | tail -n 1")
    new_started = host.run("journalctl -o short-unix -u celery-demo-beat.service | grep Started | head -n 1")
    assert old_stopped.stdout and new_started.stdout, (old_stopped.stdout, new_started.stdout)
    assert float(old_stopped.stdout.split()[0]) < float(new_started.stdout.split()[0])


def test_the_old_worker_held_nothing_when_redis_restarted(host):
    """Step 1 restarts Redis once; a worker that loses it while holding an unacknowledged message
    can crash in kombu 5.7 (docs/adopt.md). The old worker must be gone before that restart."""
    def last(unit: str, pattern: str) -> float:
        line = host.run(f"journalctl -o short-unix -u {unit} | grep -E '{pattern}' | tail -n 1").stdout
        assert line, f"no '{pattern}' line in the journal of {unit}"
        return float(line.split()[0])

    old_stopped = last("celery-demo.service", "Stopped|Deactivated")
    redis_started = last("redis-server.service", "Started")
    print(f"old worker stopped {redis_started - old_stopped:.1f} s before Redis restarted")
    assert old_stopped < redis_started
    log = old_worker_log(host)
    assert "Unrecoverable error" not in log and "Connection to broker lost" not in log, log


def test_old_units_are_stopped_disabled_and_kept_aside(host):
    for unit in OLD_UNITS:
        assert host.run(f"systemctl is-active {unit}").stdout.strip() != "active"
        assert not host.file(f"/etc/systemd/system/{unit}").exists
        assert not host.file(f"/etc/systemd/system/multi-user.target.wants/{unit}").exists
        kept = host.file(f"{KEPT_DIR}/{unit}")
        assert kept.exists and "(from the runbook)" in kept.content_string
    assert not host.file("/run/systemd/system/celery-demo.service.d").exists


def test_the_collections_flower_holds_the_port_on_loopback_only(host):
    listeners = host.check_output(f"ss -Hltn 'sport = :{FLOWER_PORT}'")
    local = [line.split()[3] for line in listeners.splitlines()]
    assert local == [f"127.0.0.1:{FLOWER_PORT}"], listeners
    assert host.service("celery-demo-flower.service").is_running
    # ss cannot name another user's process in the container (no CAP_SYS_PTRACE): the answer
    # tells them apart. The runbook's Flower had no authentication; the collection's asks for it.
    status = host.run(f"python3 -c \"import urllib.request, urllib.error\n"
                      f"try:\n    urllib.request.urlopen('http://127.0.0.1:{FLOWER_PORT}/')\n"
                      f"except urllib.error.HTTPError as e:\n    print(e.code)\"").stdout.strip()
    assert status == "401", status


def test_the_runbooks_data_is_kept_and_anonymous_access_still_works(host):
    assert host.check_output(f"redis-cli -p {REDIS_PORT} -n 3 llen runbook:data") == "1000"


def test_step1_again_changes_nothing_and_warns(host):
    run = converge()
    assert run.rc == 0, run.output[-3000:]
    assert run.changed() == 0, [line for line in run.output.splitlines() if line.startswith("changed:")]
    assert "taken over by an earlier run" in run.output
    # Nothing left to restart Redis for: the plan says no restart, so nothing is drained first.
    assert "This run restarts Redis" not in run.output
    tail = run.output[run.output.rindex("TASK ["):]
    assert "WARNING: redis_adopt_anonymous is true" in tail


def test_step2_is_refused_while_the_web_app_connects_without_credentials(host):
    run = uuid.uuid4().hex[:8]
    start_producer(host, run, RUNBOOK)
    try:
        time.sleep(4)
        step2 = converge(extra_vars={"redis_adopt_anonymous": False})
    finally:
        stop_producer(host, run, RUNBOOK)
    assert step2.rc != 0
    assert "clients connected without credentials" in step2.output and "redis_adopt_force_close" in step2.output
    assert step2.changed() == 0
    assert host.run(f"redis-cli -p {REDIS_PORT} ping").stdout.strip() == "PONG"


def test_step2_under_load_after_the_web_app_moved_to_its_acl_user(host):
    run = uuid.uuid4().hex[:8]
    # The web app reads the environment file the roles write (root:celery 0640).
    start_producer(host, run, COLLECTION, user="celery")
    time.sleep(5)
    t_begin = time.time()
    step2 = converge(extra_vars={"redis_adopt_anonymous": False})
    t_end = time.time()
    assert step2.rc == 0, step2.output[-4000:]
    time.sleep(6)
    stop_producer(host, run, COLLECTION)
    result = counts(host, run, COLLECTION)
    print(f"step 2: {t_end - t_begin:.1f} s, sent {result['sent']}, lost {result['lost']}, "
          f"run twice {result['run_twice']}; broker {broker_state(host)}")
    assert result["sent"] > 30
    assert result["lost"] == 0, result["lost_jobs"]
    assert result["run_twice"] == 0, result["twice_jobs"]
    assert "WARNING: redis_adopt_anonymous" not in step2.output
    refused = host.run(f"redis-cli -p {REDIS_PORT} ping").stdout
    assert "NOAUTH" in refused, refused


def test_step2_again_changes_nothing(host):
    run = converge(extra_vars={"redis_adopt_anonymous": False})
    assert run.rc == 0, run.output[-3000:]
    assert run.changed() == 0, [line for line in run.output.splitlines() if line.startswith("changed:")]
