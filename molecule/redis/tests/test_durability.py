"""Every acknowledged write survives a restart and a kill -9 under write load; the same
harness against a Redis with persistence off sees the loss (so it can see loss at all)."""

from __future__ import annotations

import time

from conftest import NAIVE_PORT, NAIVE_UNIT, client, main_pid, missing_items, sh, wait_ready, write_with_disruption

N = 5000


def test_acknowledged_items_survive_systemctl_restart(admin):
    key = "taskstack:test:restart"
    admin.delete(key)
    producer = client("celery")
    for i in range(1, N + 1):
        producer.rpush(key, i)  # one acknowledged RPUSH each
    before = main_pid()
    sh("systemctl restart redis-server")
    assert main_pid() != before
    missing = missing_items(6379, "celery", key, list(range(1, N + 1)))
    assert missing == []
    assert admin.llen(key) == N
    admin.delete(key)


def kill_minus_9(unit: str):
    def disrupt():
        before = main_pid(unit)
        sh(f"systemctl kill --kill-whom=main --signal=SIGKILL {unit}")
        deadline = time.monotonic() + 30
        while main_pid(unit) in (before, 0):
            assert time.monotonic() < deadline, f"{unit} did not come back after kill -9"
            time.sleep(0.1)
        print(f"{unit}: killed pid {before} with SIGKILL; systemd started pid {main_pid(unit)}")
    return disrupt


def test_acknowledged_items_survive_kill_9_under_write_load(admin):
    key = "taskstack:test:kill9"
    admin.delete(key)
    missing = write_with_disruption(6379, "celery", key, kill_minus_9("redis-server"))
    assert missing == [], f"{len(missing)} acknowledged items lost, first {missing[:10]}"
    wait_ready(admin)
    admin.delete(key)


def test_harness_sees_loss_when_persistence_is_off(naive_redis):
    """Negative check: the same kill -9 against a Redis without AOF or snapshots loses data."""
    naive_redis("appendonly no\nsave \"\"\n")
    missing = write_with_disruption(NAIVE_PORT, None, "taskstack:test:naive", kill_minus_9(NAIVE_UNIT))
    assert len(missing) >= 2000, "the harness could not see the loss it exists to detect"


def test_harness_sees_loss_on_restart_when_persistence_is_off(naive_redis):
    c = naive_redis("appendonly no\nsave \"\"\n")
    for i in range(1, N + 1):
        c.rpush("taskstack:test:naive-restart", i)
    sh(f"systemctl restart {NAIVE_UNIT}")
    missing = missing_items(NAIVE_PORT, None, "taskstack:test:naive-restart", list(range(1, N + 1)))
    assert len(missing) == N
