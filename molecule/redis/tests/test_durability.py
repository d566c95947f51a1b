"""Every acknowledged write survives a restart and a kill -9 under write load, transactions too;
the same harnesses against a Redis with persistence off, or with the ACL Redis drops
transactions under, see the loss (so they can see loss at all)."""

from __future__ import annotations

import time

import redis

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


# kombu's Redis transport writes a delivered message into its `unacked` hash and index in one
# MULTI/EXEC (QoS.append), and acks, restores and Celery's results the same way. Redis 7.0 and
# 8.0 replay an AOF's transactions as the `default` user and drop each one that user may not run
# (redis/redis#14541): with `user default off` and no permissions, a restart loses every
# message a worker held and every result written since the last AOF rewrite.
TRANSACTIONS = 300


def write_kombu_like_transactions(c: redis.Redis, prefix: str) -> None:
    for i in range(1, TRANSACTIONS + 1):
        c.pipeline(transaction=True).zadd(f"{prefix}:index", {str(i): i}).hset(f"{prefix}:hash", str(i), "m").execute()


def restarted_transactions(c: redis.Redis, prefix: str) -> int:
    return c.hlen(f"{prefix}:hash")


def test_transactions_survive_systemctl_restart(admin):
    prefix = "taskstack:test:unacked"
    admin.delete(f"{prefix}:index", f"{prefix}:hash")
    write_kombu_like_transactions(client("celery"), prefix)
    sh("systemctl restart redis-server")
    wait_ready(admin)
    kept = restarted_transactions(admin, prefix)
    print(f"transactions written {TRANSACTIONS}, found after the restart {kept}")
    assert kept == TRANSACTIONS
    admin.delete(f"{prefix}:index", f"{prefix}:hash")


def test_harness_sees_transactions_lost_when_the_default_user_has_no_permissions(naive_redis):
    """Negative check: the ACL the role wrote before (`user default reset off`) loses them."""
    naive_redis("appendonly yes\nsave \"\"\nuser default reset off\n"
                "user naive reset on nopass ~* &* +@all\n", user="naive")
    c = client(None, NAIVE_PORT, username="naive", password="x")
    write_kombu_like_transactions(c, "taskstack:test:naive-tx")
    sh(f"systemctl restart {NAIVE_UNIT}")
    wait_ready(c)
    kept = restarted_transactions(c, "taskstack:test:naive-tx")
    print(f"naive ACL: transactions written {TRANSACTIONS}, found after the restart {kept}")
    assert kept < TRANSACTIONS, "the harness could not see the loss it exists to detect"
