"""The celery ACL user runs a real Celery worker, beat, remote control and an ETA task, and
nothing more: admin and destructive commands are refused; the monitor user reads INFO only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import redis
from conftest import client, password

APP = '''
from celery import Celery

app = Celery("demo")
app.config_from_object("celeryconfig")
app.conf.beat_schedule = {"tick": {"task": "demo.tick", "schedule": 1.0}}


@app.task
def add(x, y):
    return x + y


@app.task(bind=True)
def tick(self):
    self.backend.client.incr("taskstack:test:ticks")
'''


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "*"),
        ("CONFIG", "SET", "appendonly", "no"),
        ("ACL", "LIST"),
        ("ACL", "SETUSER", "celery", "+@all"),
        ("ACL", "LOAD"),
        ("KEYS", "*"),
        ("SAVE",),
        ("SWAPDB", "0", "1"),
        ("SCRIPT", "FLUSH"),
        ("BGREWRITEAOF",),
        ("REPLICAOF", "127.0.0.1", "1"),
        ("MODULE", "LIST"),
        ("CLIENT", "KILL", "TYPE", "normal"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_celery_user_is_refused_admin_and_destructive_commands(command):
    with pytest.raises(redis.exceptions.NoPermissionError):
        client("celery").execute_command(*command)


def test_monitor_user_reads_info_and_lengths_and_nothing_else():
    """The health checks' user: INFO, and the length of a list or hash (a queue's depth, the
    unacked count), never a value, never a write, never a setting."""
    monitor = client("monitor")
    assert monitor.info("persistence")["aof_enabled"] == 1
    assert monitor.llen("celery") >= 0
    assert monitor.hlen("unacked") >= 0
    for command in (("GET", "x"), ("LRANGE", "celery", "0", "-1"), ("HGETALL", "unacked"),
                    ("LPUSH", "celery", "x"), ("DEL", "celery"), ("KEYS", "*"), ("CONFIG", "GET", "*"),
                    ("FLUSHALL",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            monitor.execute_command(*command)


@pytest.fixture
def celery_app_dir(tmp_path, admin):
    """A demo app whose broker and backend are the celery ACL user (password in a 0600 file)."""
    pw = password("redis_celery_password")
    (tmp_path / "demo.py").write_text(APP)
    config = tmp_path / "celeryconfig.py"
    config.touch(mode=0o600)
    config.write_text(textwrap.dedent(f'''
        broker_url = "redis://celery:{pw}@127.0.0.1:6379/0"
        result_backend = "redis://celery:{pw}@127.0.0.1:6379/1"
        broker_connection_retry_on_startup = True
        worker_send_task_events = True
        task_send_sent_event = True
    '''))
    admin.execute_command("ACL", "LOG", "RESET")
    results = client("admin", db=1)  # the tick task counts in the result backend's database
    results.delete("taskstack:test:ticks")
    yield tmp_path
    results.delete("taskstack:test:ticks")


def start(app_dir, *args):
    log = open(app_dir / f"{args[0]}.log", "w")
    env = dict(os.environ, PYTHONPATH=str(app_dir))
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "demo", *args], cwd=app_dir, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_celery_worker_beat_ping_and_eta_task_work_as_the_celery_user(celery_app_dir, admin):
    results = client("admin", db=1)
    sys.path.insert(0, str(celery_app_dir))
    try:
        import demo  # noqa: PLC0415 - the app exists only in this test's directory

        worker = start(celery_app_dir, "worker", "-n", "aclcheck@%h", "-c", "2", "-l", "INFO")
        beat = None
        try:
            deadline = time.monotonic() + 60
            replies = None
            while not replies:
                assert worker.poll() is None, (celery_app_dir / "worker.log").read_text()
                assert time.monotonic() < deadline, "no worker answered inspect ping"
                replies = demo.app.control.inspect(timeout=2).ping()
            print(f"inspect ping: {replies}")
            assert any(r == {"ok": "pong"} for r in replies.values())

            assert demo.add.delay(2, 3).get(timeout=30) == 5

            sent = time.monotonic()
            eta = demo.add.apply_async((4, 5), countdown=3)
            assert eta.get(timeout=60) == 9
            waited = time.monotonic() - sent
            print(f"ETA task (countdown=3) returned after {waited:.1f}s")
            assert waited >= 2.5

            beat = start(celery_app_dir, "beat", "-s", str(celery_app_dir / "schedule"), "-l", "INFO")
            deadline = time.monotonic() + 60
            while int(results.get("taskstack:test:ticks") or 0) < 3:
                assert beat.poll() is None, (celery_app_dir / "beat.log").read_text()
                assert time.monotonic() < deadline, "beat's tasks did not run"
                time.sleep(0.5)
            print(f"beat ticks run by the worker: {results.get('taskstack:test:ticks')}")
        finally:
            if beat:
                stop(beat)
            stop(worker)
    finally:
        sys.path.remove(str(celery_app_dir))
        sys.modules.pop("demo", None)
        sys.modules.pop("celeryconfig", None)

    logs = (celery_app_dir / "worker.log").read_text() + (celery_app_dir / "beat.log").read_text()
    assert "NOPERM" not in logs and "NoPermissionError" not in logs, logs[-3000:]
    # Nothing Celery did was denied: the user has every command it needs, none silently failing.
    denials = [e for e in admin.acl_log() if e.get("username") == "celery"]
    print(f"ACL LOG denials for celery: {len(denials)}")
    assert denials == [], denials[:5]
