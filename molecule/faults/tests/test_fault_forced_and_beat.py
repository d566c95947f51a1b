"""Rows of the fault matrix (docs/reliability.md), drain deploys:

- a task deaf to the cold shutdown (it ignores SIGTERM and SIGQUIT) outlasts the drain and cold
  timeouts: the deploy SIGKILLs its unit, the report names the unit and the task, and the task
  runs again exactly once, after the broker's visibility timeout;
- the new code breaks only beat (a beat_schedule entry beat cannot load), under load: the
  deploy fails cleanly, beat keeps running the previous code, the lock is released, the report
  says `failed`;
- right after it, new code on which beat dies at its start: beat is stopped and reported so;
  a good deploy afterwards restores the app.

The producer (demo.producer) sends tasks before, during and after the loaded deploys; the counts (sent,
completed, lost, run twice, what is left in the queues and kombu's `unacked` hash) are printed
one line per row (pytest -s).
"""

from __future__ import annotations

import time

import pytest
from loadlib import LOCK, assert_load_proves_something, damage, deploy, ledger, live_colour, main_pids, run_load_across
from stacklib import app_json, wait_for

DRAIN_TIMEOUT = 10
COLD_TIMEOUT = 10
# The app's (DEMO_VISIBILITY_TIMEOUT in molecule.yml): a message whose worker was SIGKILLed
# stays in `unacked` that long, then kombu's next sweep (every 10 s here) puts it back.
VISIBILITY_TIMEOUT = 90
# The deaf task's own time limits for this call. The scenario's 35/40 s would end it (the
# worker's hard limit is a SIGKILL too, and a timed-out task is acknowledged, so lost) before
# the deploy reaches its SIGKILL: 15-25 s to the drain, 10 s drain, 10 s cold shutdown (37 s
# from the task's start to the SIGKILL on the idle 2-core testbed). Below the
# visibility timeout, so the broker never hands it out twice while it runs.
DEAF_SOFT_TIME_LIMIT = 84
DEAF_TIME_LIMIT = 88
# Started before the baseline stretch and done about 8 s into the deploy, long before the drain:
# the only task the drain times out on is the deaf one.
LONG_SECONDS = 20
# From the end of the deploy: the deaf task comes back one visibility timeout after it was
# delivered (just before the deploy began) plus one sweep, and then runs in no time.
SETTLE_SECONDS = 180


@pytest.fixture(autouse=True)
def no_stale_lock(host):
    yield
    host.run(f"rm -rf {LOCK}")


def producer_run(host) -> str:
    """The run id of the producer run_load_across started (its unit is demo-producer-<run>)."""
    out = host.run("systemctl list-units --plain --no-legend --state=active 'demo-producer-*.service'").stdout
    runs = [line.split()[0].removeprefix("demo-producer-").removesuffix(".service")
            for line in out.splitlines() if line.strip()]
    assert len(runs) == 1, out
    return runs[0]


def ticks_since(host, since: float) -> int:
    return ledger(host, f'print(json.dumps(len([t for t in db.lrange("demo:ticks", 0, -1) if float(t) > {since}])))')


def test_task_deaf_to_the_cold_shutdown_is_sigkilled_reported_and_runs_again_once(host):
    unit = f"celery-demo-worker@default-{live_colour(host)}.service"
    slow_unit = f"celery-demo-worker@slow-{live_colour(host)}.service"

    def deploy_past_a_deaf_task(host):
        # In the producer's ledger, so the harness counts it and waits for its second run.
        job = f"{producer_run(host)}-deaf"
        task_id = ledger(host, f"""
import time
from demo.tasks import stubborn
run = "{job}".rsplit("-", 1)[0]
db.hset(f"demo:run:{{run}}:sent", "{job}", json.dumps(
    {{"seconds": 0, "countdown": 0, "queue": "celery", "sent": time.time(), "eta": None}}))
print(json.dumps(stubborn.apply_async(("{job}",), queue="celery", soft_time_limit={DEAF_SOFT_TIME_LIMIT},
                                      time_limit={DEAF_TIME_LIMIT}).id))
""")
        wait_for(lambda: ledger(host, f'print(json.dumps(db.llen("demo:started:{job}")))'), 30,
                 what="the deaf task to start")
        try:
            # The code update is not what this row is about: skipped, so the timings above hold.
            run, report = deploy(extra_vars={"celery_deploy_drain_timeout": DRAIN_TIMEOUT,
                                             "celery_deploy_cold_timeout": COLD_TIMEOUT,
                                             "celery_deploy_install": False})
        finally:
            # Its run after the redelivery finishes at once.
            ledger(host, f'print(json.dumps(db.set("demo:release:{job}", 1)))')
        return {"run": run, "report": report, "job": job, "task_id": task_id, "deploy_end": time.time()}

    counts = run_load_across(host, deploy_past_a_deaf_task, long_seconds=LONG_SECONDS, settle_seconds=SETTLE_SECONDS)
    outcome = counts["outcome"]
    run, report = outcome["run"], outcome["report"]
    result = report.get("hosts", {}).get(host.backend.host, {})
    force = result.get("force", {})
    job = outcome["job"]
    deaf = ledger(host, f'print(json.dumps([[float(s.split()[0]) for s in db.lrange("demo:" + kind + ":{job}", 0, -1)]'
                        ' for kind in ("started", "finished")]))')
    found = damage(counts)
    errors = [line for line in run.output.splitlines() if line.startswith("[ERROR]")]
    # When the killed unit went down (it has not stopped since), against the deaf task's start.
    gone = host.run(f"systemctl show --timestamp=unix -p InactiveEnterTimestamp --value {unit}").stdout.strip()
    killed_after = float(gone.lstrip("@")) - deaf[0][0] if gone.startswith("@") else None
    print(f"fault deaf task: sent {counts['sent']}, completed {counts['completed']}, lost {counts['lost']},"
          f" run twice {counts['run_twice']}, broker {counts['broker']}; deaf task started {len(deaf[0])}x,"
          f" finished {len(deaf[1])}x, run again {deaf[0][-1] - deaf[0][0]:.1f} s after its first start;"
          f" deploy rc={run.rc} result {report.get('result')} sigkill {force.get('sigkill')}"
          f" unit results {force.get('unit_results')} forced in {force.get('seconds')} s, killed"
          f" {killed_after if killed_after is None else round(killed_after, 1)} s after the task started;"
          f" {len(errors)} [ERROR] lines;"
          f" damage {found}")
    assert run.rc == 0, run.output[-4000:]
    assert report["result"] == "ok"
    # A wait that ran out of `until` retries prints "[ERROR]: Task failed" and registers
    # failed: true even with failed_when: false (ansible-core 2.19): a forced deploy that did
    # what it should must not read like one that failed.
    assert errors == [], errors
    assert result["drained"] is False and result["forced"] is True
    # The deploy's SIGKILL, not systemd's stop timeout, ended the deaf task's unit; the other
    # pool left after the SIGQUIT.
    assert force["sigkill"] == [unit] and force["exited_after_sigquit"] == [slow_unit]
    assert force["unit_results"][unit] == "signal", force
    assert outcome["task_id"] in [t["id"] for t in force["tasks_running_when_forced"]]
    assert [t["id"] for t in force["tasks_killed"]] == [outcome["task_id"]]
    # Killed once, run again once, after the visibility timeout (nothing was left to requeue it
    # at once), and finished.
    assert (len(deaf[0]), len(deaf[1])) == (2, 1)
    assert killed_after is not None and killed_after < DEAF_SOFT_TIME_LIMIT, gone
    assert deaf[0][1] - deaf[0][0] >= VISIBILITY_TIMEOUT
    # The rest of the load: nothing lost, nothing else run twice, nothing early, the broker clean.
    assert_load_proves_something(counts)
    assert found == {"run_twice": 1}, found


def test_cold_timeout_past_the_units_stop_timeout_is_refused_before_anything_changes(host):
    """The queued stop job SIGKILLs at TimeoutStopSec (hard time limit 40 s + margin 60 s here):
    a cold timeout that does not end well before it would let systemd kill the workers while the
    deploy waits, and the report would name no SIGKILL."""
    pids = main_pids(host)
    run, _report = deploy(extra_vars={"celery_deploy_cold_timeout": 95, "celery_deploy_drain_timeout": DRAIN_TIMEOUT})
    print(f"fault cold timeout past the stop timeout: rc={run.rc}, changed={run.changed()}")
    assert run.rc != 0
    assert "celery_deploy_cold_timeout (95 s) must be at least 10 s below" in run.output, run.output[-3000:]
    assert "(100 s:" in run.output
    assert run.changed() == 0, run.recap()
    assert main_pids(host) == pids
    assert host.run(f"test -e {LOCK}").rc != 0


BREAK_BEAT = """---
# The new code reads beat's interval from the environment and forgets to convert it: the workers
# import it fine (they never read beat_schedule), beat cannot load its schedule.
- name: Read the tick interval from the environment
  ansible.builtin.replace:
    path: "{{ celery_deploy_release_dir }}/demo/app.py"
    regexp: '"schedule": 2\\.0\\}'
    replace: '"schedule": os.environ.get("DEMO_TICK_SECONDS", "2.0")}'
"""


BREAK_BEAT_START = """---
# The new code reads beat's longest sleep from the environment, as a string: the schedule loads,
# the workers never read it, beat dies at its first tick.
- name: Put back the schedule the first row broke
  ansible.builtin.replace:
    path: "{{ celery_deploy_release_dir }}/demo/app.py"
    regexp: 'os\\.environ\\.get\\("DEMO_TICK_SECONDS", "2\\.0"\\)\\}'
    replace: '2.0}'

- name: Read beat's longest sleep from the environment
  ansible.builtin.replace:
    path: "{{ celery_deploy_release_dir }}/demo/app.py"
    regexp: '^    result_expires=3600,$'
    replace: '    result_expires=3600,\\n    beat_max_loop_interval=os.environ.get("DEMO_BEAT_MAX_LOOP", "5"),'
"""


def test_beat_failing_on_the_new_code_fails_cleanly_keeping_or_stopping_beat(host, tmp_path):
    """Two rows, one after the other, with one good deploy at the end (a deploy is the slow part):
    1. under load, new code whose schedule beat cannot load: the deploy fails cleanly, beat keeps
       running the previous code (never stopped), the workers' part of the deploy loses nothing;
    2. new code that passes the schedule check but kills beat right after its start: the deploy
       sees it not stay up, stops it (no crash loop: the previous code is gone, updated in place)
       and reports it stopped.
    A good deploy afterwards brings beat back on good code."""
    beat_unit = "celery-demo-beat.service"
    beat_pid = host.run(f"systemctl show -p MainPID --value {beat_unit}").stdout.strip()
    assert beat_pid not in ("", "0")
    schedule_broken = tmp_path / "schedule_broken.yml"
    schedule_broken.write_text(BREAK_BEAT)
    start_broken = tmp_path / "start_broken.yml"
    start_broken.write_text(BREAK_BEAT_START)

    def deploy_breaking_beat(host):
        # celery_deploy_install false: the celery role's install would copy the good source back.
        run, report = deploy(extra_vars={"celery_deploy_tasks_file": str(schedule_broken), "celery_deploy_install": False})
        return {"run": run, "report": report, "deploy_end": time.time()}

    try:
        counts = run_load_across(host, deploy_breaking_beat, long_seconds=LONG_SECONDS)
        run, report = counts["outcome"]["run"], counts["outcome"]["report"]
        beat = report.get("beat", {}).get(host.backend.host, {})
        pid_after = host.run(f"systemctl show -p MainPID --value {beat_unit}").stdout.strip()
        since = counts["outcome"]["deploy_end"]
        time.sleep(5)
        ticks = ticks_since(host, since)
        broken = host.run("grep -c DEMO_TICK_SECONDS /srv/celery/app/demo/app.py").stdout.strip()
        found = damage(counts)
        print(f"fault beat on the new code: sent {counts['sent']}, completed {counts['completed']},"
              f" lost {counts['lost']}, run twice {counts['run_twice']}, broker {counts['broker']};"
              f" deploy rc={run.rc} result {report.get('result')} beat {beat}; beat PID {beat_pid} -> {pid_after},"
              f" {ticks} ticks in the 5 s after; damage {found}")
        assert run.rc != 0
        assert "beat cannot load these beat_schedule entries" in run.output, run.output[-3000:]
        assert "Beat still runs the previous code" in run.output
        assert report["result"] == "failed"
        assert beat["failed"] is True and beat["state"] == "running_previous_code"
        assert "demo-tick" in beat["message"]
        assert host.run(f"test -e {LOCK}").rc != 0, "the rescue left the lock behind"
        # The new code is on the host (the worker deploy put it there) but beat was never stopped:
        # the same process keeps sending the schedule.
        assert broken == "1"
        assert pid_after == beat_pid
        assert ticks >= 2
        # The workers' part of the deploy went through: every task ran once.
        assert_load_proves_something(counts)
        assert found == {}, found

        run, report = deploy(extra_vars={"celery_deploy_tasks_file": str(start_broken), "celery_deploy_install": False})
        beat = report.get("beat", {}).get(host.backend.host, {})
        time.sleep(6)  # past RestartSec=5s: a unit left to Restart=on-failure would be back by now
        state = host.run(f"systemctl is-active {beat_unit}").stdout.strip()
        print(f"fault beat dies at start: deploy rc={run.rc} result {report.get('result')} beat {beat};"
              f" unit {state} 6 s later")
        assert run.rc != 0
        assert "did not stay up on the new code" in run.output, run.output[-3000:]
        assert "Beat is stopped" in run.output
        assert report["result"] == "failed"
        assert beat["failed"] is True and beat["state"] == "stopped"
        assert state in ("inactive", "failed")
        assert host.run(f"test -e {LOCK}").rc != 0, "the rescue left the lock behind"
    finally:
        restore = deploy()
    run, report = restore
    beat = report.get("beat", {}).get(host.backend.host, {})
    print(f"good deploy after it: rc={run.rc} result {report.get('result')} beat {beat}")
    assert run.rc == 0, run.output[-3000:]
    assert beat["state"] == "running_new_code" and beat["new_pid"] != int(beat_pid)
    assert host.run("grep -c -e DEMO_TICK_SECONDS -e DEMO_BEAT_MAX_LOOP /srv/celery/app/demo/app.py").stdout.strip() == "0"
    assert main_pids(host) and wait_for(lambda: ticks_since(host, time.time() - 4) >= 1, 20, what="beat to tick")
    assert app_json(host, "import json\nfrom demo.tasks import add\nprint(json.dumps(add.delay(2, 3).get(timeout=30)))") == 5
