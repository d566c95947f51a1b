"""Two worker hosts on one broker: a change or a deploy never pauses the whole fleet.

The harness sends short tasks to the shared queue from host a and pins a long task (demo.tasks.hold)
to each host through its own queue. Each long task is released a few seconds after its host's
worker began to stop, so a host that restarts is out for at least that long. The counts are
printed (pytest -s): sent, completed, lost, run twice; the stop windows of the two hosts; the
longest pause between task starts. The negative check runs the same harness with both hosts
restarting at once and shows the pause the rolling restart avoids. The last test takes host b
away (docker kill) in the middle of a rolling deploy, with the load on host a's queues.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import testinfra
from stacklib import (
    PROJECT,
    PlaybookRun,
    app_json,
    converge_in_background,
    inventory_dir,
    longest_pause,
    wait_for,
    write_inventory,
)

DISTRO = os.environ.get("MOLECULE_DISTRO", "debian12")
HOSTS = {"a": f"taskstack-fleet-{DISTRO}-a", "b": f"taskstack-fleet-{DISTRO}-b"}
UNIT = "celery-demo-worker@default-blue.service"
DEPLOY = PROJECT / "playbooks" / "deploy.yml"
# How long a host's long task keeps running after its worker began to stop: the time that
# host is out of service during a warm restart.
HOLD_AFTER_STOP = 8.0
RATE = 5.0

LOAD = """
import json, sys, time
from demo.tasks import ledger, work
run, rate, queues = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
db = ledger()
sent = 0
while not db.exists(f"demo:run:{run}:stop"):
    job = f"{run}-{sent}"
    seconds = (0.1, 0.3, 0.8)[sent % 3]
    queue = queues[sent % len(queues)]
    db.hset(f"demo:run:{run}:sent", job, json.dumps({"seconds": seconds, "sent": time.time(), "queue": queue}))
    work.apply_async((job, seconds), queue=queue)
    sent += 1
    time.sleep(1 / rate)
db.set(f"demo:run:{run}:done", sent)
"""


@pytest.fixture(scope="module")
def hosts():
    return {key: testinfra.get_host(f"docker://{name}") for key, name in HOSTS.items()}


def ledger(host, code: str):
    return app_json(host, "import json\nfrom demo.tasks import ledger\ndb = ledger()\n" + code)


def stop_began(host) -> float:
    out = host.run(f"systemctl show --timestamp=unix -p ActiveExitTimestamp --value {UNIT}").stdout.strip()
    return float(out.lstrip("@") or 0)


def unit_window(host) -> tuple[float, float]:
    """When the worker last began to stop and when it was running again."""
    out = host.run(f"systemctl show --timestamp=unix -p ActiveExitTimestamp -p ActiveEnterTimestamp {UNIT}").stdout
    values = dict(line.split("=", 1) for line in out.split())
    return float(values["ActiveExitTimestamp"].lstrip("@") or 0), float(values["ActiveEnterTimestamp"].lstrip("@") or 0)


def main_pid(host) -> str:
    return host.run(f"systemctl show -p MainPID --value {UNIT}").stdout.strip()


def start_load(a, queues: tuple[str, ...] = ("celery",)) -> str:
    """Start the producer on host a (RATE tasks a second, round robin over `queues`); its run id."""
    run = uuid.uuid4().hex[:10]
    a.run(f"cat > /tmp/fleet_load_{run}.py <<'EOF'\n{LOAD}\nEOF")
    started = a.run(
        f"systemd-run --unit fleet-load-{run} -p User=celery -p Group=celery"
        f" -p EnvironmentFile=/etc/celery/demo.env -p WorkingDirectory=/srv/celery/app"
        f" --setenv=PYTHONPATH=/srv/celery/app"
        f" /opt/celery/venv/bin/python /tmp/fleet_load_{run}.py {run} {RATE} {','.join(queues)}")
    assert started.rc == 0, started.stderr
    try:
        wait_for(lambda: ledger(a, f'print(json.dumps(db.hget("demo:run:{run}:sent", "{run}-0") is not None))'), 20,
                 what="the load to send its first task")
    except AssertionError:
        raise AssertionError(a.run(f"journalctl -u fleet-load-{run} --no-pager | tail -20").stdout) from None
    return run


def stop_load(a, run: str, holds: tuple[str, ...] = ()) -> dict:
    """Stop the producer, wait for what it sent (and the `holds`) to finish; every job with
    its starts and finishes as [time, node]."""
    ledger(a, f'print(json.dumps(db.set("demo:run:{run}:stop", 1)))')
    wait_for(lambda: ledger(a, f'print(json.dumps(db.get("demo:run:{run}:done") is not None))'), 30,
             what="the load to stop")
    read = f"""
jobs = {{k.decode(): json.loads(v) for k, v in db.hgetall("demo:run:{run}:sent").items()}}
jobs.update({{job: {{}} for job in {list(holds)!r}}})
def stamps(kind, job):
    return [s.decode().split() for s in db.lrange(f"demo:{{kind}}:{{job}}", 0, -1)]
print(json.dumps({{job: dict(meta, starts=stamps("started", job), finishes=stamps("finished", job))
                  for job, meta in jobs.items()}}))
"""

    def settled():
        jobs = ledger(a, read)
        return jobs if all(j["finishes"] for j in jobs.values()) else None

    try:
        wait_for(settled, 60, interval=2, what="every task to finish")
    except AssertionError:
        pass
    time.sleep(2)  # a task killed late is redelivered: let it show
    return ledger(a, read)


def run_across(hosts: dict, action, pin_long_tasks: bool = True) -> dict:
    """Load before, during and after `action()`, a long task pinned to each host (released
    HOLD_AFTER_STOP seconds after its host's worker began to stop); count."""
    a = hosts["a"]
    run = start_load(a)
    holds = {key: f"{run}-hold-{key}" for key in hosts} if pin_long_tasks else {}
    before = {key: stop_began(h) for key, h in hosts.items()}
    ledger(a, "from demo.tasks import hold\n" + "".join(
        f"hold.apply_async(({job!r}, 300), queue='fleet-{key}')\n" for key, job in holds.items())
        + "print(json.dumps(1))")
    wait_for(lambda: all(ledger(a, f'print(json.dumps(db.llen("demo:started:{job}")))') for job in holds.values()),
             30, what="the long task on each host to start")
    time.sleep(4)
    done = threading.Event()

    def release_each_after_its_stop():
        pending = dict(holds)
        began: dict[str, float] = {}
        while pending and not done.is_set():
            for key in list(pending):
                if key not in began and stop_began(hosts[key]) != before[key]:
                    began[key] = time.monotonic()
                if key in began and time.monotonic() - began[key] >= HOLD_AFTER_STOP:
                    ledger(a, f'print(json.dumps(db.set("demo:release:{pending.pop(key)}", 1)))')
            time.sleep(0.3)
        for job in pending.values():
            ledger(a, f'print(json.dumps(db.set("demo:release:{job}", 1)))')

    releaser = threading.Thread(target=release_each_after_its_stop)
    releaser.start()
    t_action = time.time()
    try:
        outcome = action()
    finally:
        t_action_end = time.time()
        done.set()
        releaser.join()
        time.sleep(4)
        ledger(a, f'print(json.dumps(db.set("demo:run:{run}:stop", 1)))')
    jobs = stop_load(a, run, tuple(holds.values()))
    starts = [float(s[0]) for job, j in jobs.items() if job not in holds.values() for s in j["starts"]]
    windows = {key: unit_window(h) for key, h in hosts.items()}
    counts = {
        "sent": len(jobs),
        "completed": sum(1 for j in jobs.values() if j["finishes"]),
        "lost": sum(1 for j in jobs.values() if not j["finishes"]),
        "run_twice": sum(1 for j in jobs.values() if len(j["starts"]) > 1),
        "holds": {key: [len(jobs[job]["starts"]), len(jobs[job]["finishes"])] for key, job in holds.items()},
        "stop_windows": {key: [round(w[0] - t_action, 1), round(w[1] - t_action, 1)] for key, w in windows.items()},
        "windows_overlap": max(w[0] for w in windows.values()) < min(w[1] for w in windows.values()),
        "longest_pause": round(longest_pause(starts, t_action, t_action_end), 2),
        "action_seconds": round(t_action_end - t_action, 1),
        "served_by": sorted({s[1] for job, j in jobs.items() for s in j["starts"]}),
    }
    print(f"fleet across {getattr(action, '__name__', 'action')}: {json.dumps(counts)}")
    return {**counts, "outcome": outcome}


def converge_with(extra_vars: dict):
    def converge_fleet() -> PlaybookRun:
        playbook = converge_in_background(extra_vars=extra_vars)
        output = playbook.communicate(timeout=900)[0]
        return PlaybookRun(playbook.returncode, output)
    return converge_fleet


def deploy(extra_vars: dict):
    def deploy_fleet() -> tuple[PlaybookRun, dict]:
        with tempfile.TemporaryDirectory(prefix="taskstack-fleet-") as tmp:
            report = Path(tmp) / "report.json"
            cmd = ["ansible-playbook", "-i", str(inventory_dir()),
                   "-e", json.dumps({"celery_deploy_report": str(report), **extra_vars}), str(DEPLOY)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            return PlaybookRun(proc.returncode, proc.stdout + proc.stderr), (
                json.loads(report.read_text()) if report.exists() else {})
    return deploy_fleet


def assert_no_task_lost(counts: dict, pinned: bool = True) -> None:
    assert counts["sent"] > 40, "too little load to prove anything"
    assert counts["lost"] == 0
    assert counts["run_twice"] == 0
    assert counts["completed"] == counts["sent"]
    assert counts["holds"] == ({"a": [1, 1], "b": [1, 1]} if pinned else {})
    assert counts["served_by"] == sorted(f"default-blue@{name}" for name in HOSTS.values())


def test_concurrency_change_restarts_the_hosts_one_at_a_time_and_the_fleet_keeps_serving(hosts):
    counts = run_across(hosts, converge_with({"celery_worker_concurrency": 3}))
    run = counts["outcome"]
    assert run.rc == 0, run.output[-3000:]
    assert_no_task_lost(counts)
    assert not counts["windows_overlap"], "both hosts were out of service at once"
    assert counts["longest_pause"] < HOLD_AFTER_STOP / 2
    for key, host in hosts.items():
        stats = app_json(host, f"""
import json
from demo.app import app
print(json.dumps(app.control.inspect(destination=["default-blue@{HOSTS[key]}"], timeout=3).stats()))
""")
        assert stats[f"default-blue@{HOSTS[key]}"]["pool"]["max-concurrency"] == 3


def test_restarting_every_host_at_once_pauses_the_fleet(hosts):
    """Negative check: what a fleet-wide restart (celery_worker_restart_batch as large as the
    fleet, or `systemctl restart` everywhere at once) does under the same harness: both hosts out
    together and no task starts meanwhile. The harness sees the pause the rolling restart avoids."""
    def restart_every_host_at_once():
        threads = [threading.Thread(target=h.run, args=(f"systemctl restart {UNIT}",)) for h in hosts.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    counts = run_across(hosts, restart_every_host_at_once)
    assert counts["windows_overlap"]
    assert counts["longest_pause"] >= HOLD_AFTER_STOP - 2
    assert_no_task_lost(counts)


def test_deploy_rolls_host_by_host_under_load_losing_nothing(hosts):
    pids = {key: main_pid(h) for key, h in hosts.items()}
    # No pinned long task: the drain would wait for it (the deploy scenario covers that case).
    counts = run_across(hosts, deploy({"celery_deploy_serial": 1, "celery_deploy_drain_timeout": 30}),
                        pin_long_tasks=False)
    run, report = counts["outcome"]
    assert run.rc == 0, run.output[-3000:]
    assert report["result"] == "ok"
    assert sorted(report["hosts"]) == sorted(HOSTS.values())
    assert all(main_pid(h) != pids[key] for key, h in hosts.items()), "a host kept its old worker"
    assert_no_task_lost(counts, pinned=False)
    assert not counts["windows_overlap"], "both hosts were out of service at once"
    assert counts["longest_pause"] < HOLD_AFTER_STOP / 2


def test_a_failed_first_batch_stops_the_rollout_and_the_rest_keeps_serving(hosts, tmp_path):
    update = tmp_path / "update.yml"
    update.write_text(
        "---\n- name: Fetch the release (missing on the first host)\n  ansible.builtin.fail:\n"
        "    msg: release 9.9.9 not found\n"
        f"  when: inventory_hostname == {HOSTS['a']!r}\n")
    pids = {key: main_pid(h) for key, h in hosts.items()}
    run, report = deploy({"celery_deploy_serial": 1, "celery_deploy_tasks_file": str(update),
                          "celery_deploy_install": False})()
    queues = app_json(hosts["a"], """
import json
from demo.app import app
print(json.dumps({k: sorted(q["name"] for q in v)
                  for k, v in (app.control.inspect(timeout=3).active_queues() or {}).items()}))
""")
    print(f"failed first batch: rc={run.rc}, result {report.get('result')}, hosts in report"
          f" {sorted(report.get('hosts', {}))}, queues after {queues}")
    assert run.rc != 0
    assert "release 9.9.9 not found" in run.output
    assert HOSTS["b"] not in report.get("hosts", {}), "the rollout went on past the failed batch"
    assert {key: main_pid(h) for key, h in hosts.items()} == pids
    assert queues == {f"default-blue@{name}": ["celery", f"fleet-{key}"] for key, name in HOSTS.items()}


def deploy_names():
    """plugins/filter/celery_names.py as plain Python: the lock path the deploy uses."""
    spec = importlib.util.spec_from_file_location("celery_names", PROJECT / "plugins" / "filter" / "celery_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def consumed_queues(host) -> dict:
    """Every node that answers, with the queues it consumes."""
    return app_json(host, """
import json
from demo.app import app
print(json.dumps({k: sorted(q["name"] for q in v)
                  for k, v in (app.control.inspect(timeout=3).active_queues() or {}).items()}))
""")


# Host b goes the moment this task (the drain) reports for the host named by the test's case.
LOSE_B_AFTER = "Stop the serving nodes taking tasks and wait for the running ones"
# How long host b stays away after the deploy ended: host a serves alone meanwhile.
B_AWAY_SECONDS = 10
# When host b goes: the host whose drain is the signal, the queues the load goes to, and how the
# report must describe b.
#  - during its deploy: b has drained (it holds no task), so the load may use the shared queue;
#  - before its deploy began (while host a deploys): b still consumes `celery` when it goes, and
#    what it held would come back only after the broker's visibility timeout, so the load goes to
#    fleet-a only.
LOSSES = {
    "during_its_deploy": ("b", ("fleet-a", "celery"), "unreachable during its deploy"),
    "before_its_deploy": ("a", ("fleet-a",), "unreachable when its deploy began"),
}


def deploy_losing_host_b(after_drain_of: str, extra_vars: dict) -> tuple[PlaybookRun, dict, float | None]:
    """Roll the deploy and `docker kill` host b once the drain of host `after_drain_of` is done;
    the run, its report and when b went.

    docker kill, not docker stop: a host that disappears (power, kernel, network) gives no
    warning, and `docker stop` would leave systemd 10 s to shut down first. The deploy reaches b
    through the Docker API connection here: like SSH, it reports a host it cannot reach as
    UNREACHABLE (the docker CLI connection with pipelining reports a module failure instead, which
    Ansible rescues like any failed task and which proves nothing about an unreachable host)."""
    api = write_inventory({"all": {"hosts": {name: {"ansible_connection": "community.docker.docker_api"}
                                             for name in HOSTS.values()}}})
    lost_at = None
    with tempfile.TemporaryDirectory(prefix="taskstack-fleet-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = ["ansible-playbook", "-i", str(inventory_dir()), "-i", str(api),
               "-e", json.dumps({"celery_deploy_report": str(report), **extra_vars}), str(DEPLOY)]
        lines = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            task = ""
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("TASK ["):
                    task = line
                elif (lost_at is None and LOSE_B_AFTER in task
                      and line.startswith((f"ok: [{HOSTS[after_drain_of]}]", f"changed: [{HOSTS[after_drain_of]}]"))):
                    subprocess.run(["docker", "kill", HOSTS["b"]], check=True, capture_output=True)
                    lost_at = time.time()
            proc.wait(timeout=600)
        api.unlink()
        return PlaybookRun(proc.returncode, "".join(lines)), (
            json.loads(report.read_text()) if report.exists() else {}), lost_at


@pytest.mark.skipif(DISTRO != "debian12", reason="playbook logic, the same on every distro: Debian 12 only")
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_a_host_lost_mid_deploy_stops_the_rollout_releases_the_lock_and_the_rest_keeps_serving(hosts, loss):
    after_drain_of, queues, described = LOSSES[loss]
    a = hosts["a"]
    lock = deploy_names().deploy_lock_path("demo.app")
    run_id = start_load(a, queues=queues)
    back_at = None
    try:
        time.sleep(3)
        run, report, lost_at = deploy_losing_host_b(
            after_drain_of, {"celery_deploy_serial": 1, "celery_deploy_drain_timeout": 30})
        assert lost_at is not None, f"the deploy never drained host {after_drain_of}:\n" + run.output[-3000:]
        deploy_ended = time.time()
        time.sleep(B_AWAY_SECONDS)
        lock_left = a.run(f"test -e {lock}").rc == 0
        queues_while_b_away = consumed_queues(a)
    finally:
        # b comes back as after a power cut: systemd boots and starts the enabled units.
        subprocess.run(["docker", "start", HOSTS["b"]], check=True, capture_output=True)
        back_at = time.time()
    queues_after = wait_for(
        lambda: (q := consumed_queues(a)).get(f"default-blue@{HOSTS['b']}") and q, 120, interval=2,
        what="host b's worker to consume again after it came back")
    time.sleep(3)
    jobs = stop_load(a, run_id)

    def started_between(begin: float, end: float) -> list[list[str]]:
        return [s for j in jobs.values() for s in j["starts"] if begin <= float(s[0]) <= end]

    while_away = started_between(lost_at, back_at)
    counts = {
        "sent": len(jobs),
        "sent_to_fleet_a": sum(1 for j in jobs.values() if j["queue"] == "fleet-a"),
        "completed_fleet_a": sum(1 for j in jobs.values() if j["queue"] == "fleet-a" and j["finishes"]),
        "completed": sum(1 for j in jobs.values() if j["finishes"]),
        "lost": sum(1 for j in jobs.values() if not j["finishes"]),
        "run_twice": sum(1 for j in jobs.values() if len(j["starts"]) > 1),
        "b_away_seconds": round(back_at - lost_at, 1),
        "started_while_b_away": len(while_away),
        "served_while_b_away": sorted({s[1] for s in while_away}),
        # From the end of the deploy: when b goes before its own deploy, a restarts meanwhile.
        "longest_pause_after_deploy": round(
            longest_pause([float(s[0]) for s in while_away], deploy_ended, back_at), 2),
    }
    print(f"host b lost {loss}: rc={run.rc}, result {report.get('result')}, lock left {lock_left},"
          f" report hosts {json.dumps({h: [r.get('failed'), r.get('message')] for h, r in report.get('hosts', {}).items()})},"
          f" queues while b away {queues_while_b_away}, after {queues_after}; {json.dumps(counts)}")

    assert run.rc != 0, "the deploy said ok although a host disappeared"
    assert not lock_left, "the lock stayed behind: the next deploy would refuse to run"
    assert report.get("result") == "failed", run.output[-3000:]
    assert report["hosts"][HOSTS["a"]]["failed"] is False
    assert report["hosts"][HOSTS["b"]]["failed"] is True
    assert report["hosts"][HOSTS["b"]]["unreachable"] is True
    assert report["hosts"][HOSTS["b"]]["message"].startswith(described)
    # The rollout stopped with b: a serves on the new code alone, consuming both its queues.
    assert queues_while_b_away == {f"default-blue@{HOSTS['a']}": ["celery", "fleet-a"]}
    assert counts["sent"] > 40 and counts["sent_to_fleet_a"] > 20, "too little load to prove anything"
    assert counts["lost"] == 0
    assert counts["run_twice"] == 0
    assert counts["completed"] == counts["sent"]
    assert counts["completed_fleet_a"] == counts["sent_to_fleet_a"]
    assert counts["started_while_b_away"] > 0
    assert counts["served_while_b_away"] == [f"default-blue@{HOSTS['a']}"]
    assert counts["longest_pause_after_deploy"] < HOLD_AFTER_STOP / 2
    # Back from the dead, b consumes again (its units are enabled), so later runs start clean.
    assert queues_after == {f"default-blue@{name}": ["celery", f"fleet-{key}"] for key, name in HOSTS.items()}
