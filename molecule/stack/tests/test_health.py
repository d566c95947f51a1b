"""Health, status and metrics of the stack (issue #11): the worker host's health command and
taskstack.celery.status go unhealthy when a pool stops, when a queue holds more than its
threshold and when Redis fails to write its AOF, and healthy again after; the Redis exporter
answers on loopback only, as a user that cannot read a value.

Each check comes with the naive variant it guards against, asserted to miss the fault: a check
that any worker answers, the bare queue list without its priority lists, aof_last_write_status
alone, an exporter user with +@read.

Debian 12 only: the roles' logic is the same on every distro, and the suite keeps its budget.
"""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
import redis
from stacklib import DEBIAN12_ONLY, PROJECT, app_json, converge, credential, wait_for

pytestmark = DEBIAN12_ONLY

REDIS_PORT = 6380
HEALTH = "/usr/local/bin/celery-health-demo"
HEALTH_CONFIG = "/etc/celery/demo-health.json"
STATUS = PROJECT / "playbooks" / "status.yml"
SLOW_UNIT = "celery-demo-worker@slow-blue.service"
# molecule.yml: celery_worker_health_queue_max_depth {slow: 3}.
SLOW_MAX_DEPTH = 3
EXPORTER = "http://127.0.0.1:9121/metrics"


@pytest.fixture(scope="module")
def host_name(host):
    return host.backend.host


def admin(host_name: str, db: int = 0) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=db, username="admin",
                       password=credential(host_name, "redis_admin_password"),
                       socket_timeout=10, decode_responses=True)


def health(host) -> tuple[int, dict, str]:
    """The health command as a systemd timer runs it (root): exit code, report, raw output."""
    run = host.run(HEALTH)
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, f"not one line of JSON (rc={run.rc}): {run.stdout!r} {run.stderr!r}"
    return run.rc, json.loads(lines[0]), run.stdout


def status(*args: str):
    return converge(*args, playbook=STATUS, timeout=300)


def wait_healthy(host, timeout: float = 60) -> dict:
    def check():
        rc, report, _out = health(host)
        return report if rc == 0 and report["healthy"] else None
    return wait_for(check, timeout, interval=1, what="the health command to say healthy")


def test_health_command_reports_the_converged_stack_healthy_without_showing_a_secret(host, host_name):
    rc, report, out = health(host)
    assert rc == 0, report["problems"]
    assert report["healthy"] is True
    assert set(report["nodes"]) == {f"default-blue@{host_name}", f"slow-blue@{host_name}"}
    assert all(node["ping"] for node in report["nodes"].values())
    assert set(report["queues"]) == {"celery", "slow"}
    assert report["persistence"]["aof_enabled"] is True
    assert report["persistence"]["aof_last_write_status"] == "ok"
    assert report["colour"] == "blue"
    for secret in ("redis_monitor_password", "redis_celery_password"):
        assert credential(host_name, secret) not in out
    config = host.file(HEALTH_CONFIG)
    assert (config.user, config.group, config.mode) == ("root", "celery", 0o640)
    # Another user gets no answer (and no password): unhealthy, exit 1.
    nobody = host.run(f"runuser -u nobody -- {HEALTH}")
    assert nobody.rc == 1 and '"healthy":false' in nobody.stdout, nobody.stdout + nobody.stderr
    assert credential(host_name, "redis_monitor_password") not in nobody.stdout + nobody.stderr


def test_stopped_pool_makes_health_and_status_unhealthy_then_healthy_again(host, host_name):
    slow = f"slow-blue@{host_name}"
    assert host.run(f"systemctl stop {SLOW_UNIT}").rc == 0
    try:
        rc, report, _out = health(host)
        assert rc == 1
        assert f"node {slow}: no answer to ping" in report["problems"]
        assert report["nodes"][f"default-blue@{host_name}"]["ping"] is True
        # The naive check, "a worker answers ping", still passes: only exact nodenames see it.
        anyone = app_json(host, """
import json
from demo.app import app
print(json.dumps(sorted(app.control.inspect(timeout=2).ping() or {})))
""")
        assert anyone and slow not in anyone
        run = status("--check")
        print("\n".join(line for line in run.output.splitlines() if "PROBLEM" in line or "NO ANSWER" in line))
        assert run.rc != 0, run.output[-3000:]
        assert f"node {slow}: NO ANSWER" in run.output
        assert "Unhealthy: " + host_name in run.output
    finally:
        host.run(f"systemctl start {SLOW_UNIT}")
    report = wait_healthy(host)
    assert report["nodes"][slow]["ping"] is True
    run = status("--check")
    assert run.rc == 0, run.output[-3000:]
    assert f"{host_name}: healthy" in run.output
    assert run.changed() == 0


def test_queue_over_its_threshold_counts_every_priority_list(host, host_name):
    """The slow pool (concurrency 1, prefetch 1) holds one `hold` task; the others wait, spread
    over kombu's priority lists of the queue `slow`."""
    jobs = [f"health-{n}-{uuid.uuid4().hex[:8]}" for n in range(6)]
    ledger = admin(host_name, db=2)
    broker = admin(host_name)
    try:
        app_json(host, f"""
import json
from demo.tasks import hold
for job, priority in zip({jobs!r}, [0, 0, 3, 3, 9, 9]):
    hold.apply_async((job, 120), queue="slow", priority=priority)
print(json.dumps(True))
""")

        def backed_up():
            report = health(host)[1]
            return report if report["queues"]["slow"]["depth"] > SLOW_MAX_DEPTH else None
        report = wait_for(backed_up, 20, interval=0.5, what="the slow queue to back up")
        depth = report["queues"]["slow"]["depth"]
        assert report["healthy"] is False
        assert f"queue slow: depth {depth} > max {SLOW_MAX_DEPTH}" in report["problems"]
        steps = {step: n for step, n in report["queues"]["slow"]["by_priority"].items() if n}
        assert len(steps) >= 2, f"the waiting messages are not spread over priority lists: {steps}"
        # The naive depth, LLEN of the bare list, stays within the threshold: it misses the backlog.
        assert broker.llen("slow") <= SLOW_MAX_DEPTH < depth
        run = status("--check")
        assert run.rc != 0, run.output[-3000:]
        assert "queue slow: depth" in run.output and "PROBLEM: queue slow" in run.output
    finally:
        for job in jobs:
            ledger.set(f"demo:release:{job}", 1, ex=600)
    # Released, each hold ends at once: the pool drains the queue.
    wait_healthy(host, timeout=60)
    finished = wait_for(lambda: all(ledger.llen(f"demo:finished:{job}") for job in jobs) or None, 60,
                        what="every hold task to finish")
    assert finished


def test_failed_aof_write_makes_health_and_status_unhealthy_then_healthy_again(host, host_name):
    """Redis cannot create its next AOF file in an unwritable appendonlydir (as on a full or
    read-only disk): BGREWRITEAOF fails and INFO says aof_last_bgrewrite_status:err."""
    aof_dir = "/var/lib/redis/appendonlydir"
    mode = host.run(f"stat -c %a {aof_dir}").stdout.strip()
    assert mode, f"no {aof_dir}"
    broker = admin(host_name)
    wait_for(lambda: broker.info("persistence")["aof_rewrite_in_progress"] == 0, 30,
             what="no AOF rewrite in progress")
    try:
        assert host.run(f"chmod 0500 {aof_dir}").rc == 0
        with pytest.raises(redis.ResponseError):
            broker.bgrewriteaof()
        persistence = broker.info("persistence")
        assert persistence["aof_last_bgrewrite_status"] == "err"
        # The naive check reads aof_last_write_status only: still "ok", it misses the failure.
        assert persistence["aof_last_write_status"] == "ok"
        rc, report, _out = health(host)
        assert rc == 1
        assert "redis aof_last_bgrewrite_status: err (want ok)" in report["problems"]
        run = status("--check")
        assert run.rc != 0, run.output[-3000:]
        assert "PROBLEM: redis aof_last_bgrewrite_status: err" in run.output
    finally:
        host.run(f"chmod {mode} {aof_dir}")
    broker.bgrewriteaof()
    wait_for(lambda: broker.info("persistence")["aof_last_bgrewrite_status"] == "ok", 30,
             what="a successful AOF rewrite")
    wait_healthy(host)
    run = status("--check")
    assert run.rc == 0, run.output[-3000:]


def scrape() -> str:
    with urllib.request.urlopen(EXPORTER, timeout=10) as response:
        return response.read().decode()


def assert_cannot_read_values(client: redis.Redis) -> None:
    """The exporter's user check: no GET, no LRANGE, no CONFIG GET (masterauth)."""
    for command in (("GET", "demo:health:secret"), ("LRANGE", "celery", "0", "-1"),
                    ("CONFIG", "GET", "masterauth")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)


def test_redis_exporter_answers_on_loopback_only_as_a_user_that_cannot_read_values(host, host_name):
    metrics = wait_for(lambda: scrape() if "redis_up 1" in scrape() else None, 30,
                       what="the exporter to scrape Redis")
    assert 'redis_exporter_last_scrape_error{err=""} 0' in metrics
    assert "redis_aof_enabled 1" in metrics
    # ss -Hltn: State Recv-Q Send-Q Local-Address:Port Peer-Address:Port
    listening = [line.split()[3] for line in host.run("ss -Hltn 'sport = :9121'").stdout.splitlines()]
    assert listening == ["127.0.0.1:9121"], listening
    password = credential(host_name, "redis_exporter_password")
    pid = host.run("systemctl show -p MainPID --value prometheus-redis-exporter").stdout.strip()
    assert password not in host.run(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    # Masked before install: it never served on the package's default, every address.
    started = host.run("journalctl -u prometheus-redis-exporter --no-pager -o cat | grep 'Providing metrics at'")
    assert started.stdout and all("at 127.0.0.1:9121/" in line for line in started.stdout.splitlines()), started.stdout
    env = host.file("/etc/default/prometheus-redis-exporter")
    assert (env.user, env.mode) == ("root", 0o600)

    broker = admin(host_name)
    broker.set("demo:health:secret", "value", ex=60)
    # What a scrape asks for and is refused (ACL LOG): only SLOWLOG GET, left out on purpose.
    broker.acl_log_reset()
    scrape()
    denied = {entry["object"] for entry in broker.acl_log() if entry["username"] == "exporter"}
    assert denied <= {"slowlog|get"}, f"the exporter needs more than its user may run: {denied}"
    exporter = redis.Redis(host="127.0.0.1", port=REDIS_PORT, username="exporter",
                           password=password, socket_timeout=10)
    assert_cannot_read_values(exporter)
    # The naive variant, an exporter user with +@read on every key, reads the value.
    broker.acl_setuser("naive-exporter", enabled=True, passwords=["+naive-exporter-password"],
                       keys=["*"], commands=["+@read", "+config|get"])
    try:
        naive = redis.Redis(host="127.0.0.1", port=REDIS_PORT, username="naive-exporter",
                            password="naive-exporter-password", socket_timeout=10)
        with pytest.raises(pytest.fail.Exception):
            assert_cannot_read_values(naive)
    finally:
        broker.acl_deluser("naive-exporter")


def test_flower_metrics_count_task_events_of_the_workers(host, host_name):
    """celery_worker_task_events (-E): Flower's /metrics has per-task counters."""
    import base64

    app_json(host, """
import json
from demo.tasks import add
print(json.dumps(add.delay(1, 2).get(timeout=30)))
""")
    token = base64.b64encode(f"admin:{credential(host_name, 'flower_admin_password')}".encode()).decode()
    request = urllib.request.Request("http://127.0.0.1:5555/flower/metrics",
                                     headers={"Authorization": f"Basic {token}"})

    def succeeded():
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return [line for line in text.splitlines()
                if line.startswith("flower_events_total") and 'type="task-succeeded"' in line
                and 'task="demo.tasks.add"' in line] or None
    print(wait_for(succeeded, 30, what="Flower to count the task's events"))
    execstart = host.run("systemctl show -p ExecStart --value celery-demo-worker@default-blue").stdout
    assert "--task-events" in execstart
