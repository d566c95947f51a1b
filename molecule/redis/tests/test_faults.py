"""Faults of a Redis converge: a setting Redis rejects, an ACL Redis cannot load, a stale AOF.

Each bad value is one that the preflight cannot know to be wrong (a directive name that looks
like one, a command this Redis does not have, a value Redis rejects): this host's Redis tries
the candidate file first, the run fails naming what Redis said, and the broker keeps serving on
its files, untouched. Before that check the role wrote such files and restarted Redis into a
crash loop (redis.conf) or left an ACL file on disk that the next start aborts on.
"""

from __future__ import annotations

import pytest
from conftest import DEBIAN12_ONLY, client, main_pid, run_playbook, sh, wait_ready

FILES = "/etc/redis/redis.conf /etc/redis/users.acl"


def broker_state() -> tuple[str, int]:
    return sh(f"sha256sum {FILES}"), main_pid()


@pytest.mark.parametrize(
    ("extra_vars", "said"),
    [
        # Redis 7 says "Bad directive", Redis 8 "Unresolved Configuration(s)": both name the line.
        ({"redis_extra_config": {"maxmemory-polcy": "noeviction"}}, "maxmemory-polcy noeviction"),
        ({"redis_extra_config": {"hz": "fast"}}, "argument couldn't be parsed into an integer"),
        ({"redis_celery_commands": ["get", "set", "nosuchcmd"]}, "nosuchcmd"),
    ],
    ids=["misspelt directive", "value Redis rejects", "command this Redis lacks"],
)
def test_a_file_redis_rejects_fails_the_run_and_the_broker_keeps_serving(admin, extra_vars, said):
    before = broker_state()
    producer = client("celery")
    producer.rpush("taskstack:test:faults", "before")
    run = run_playbook(extra_vars=extra_vars)
    assert run.rc != 0
    assert run.changed == 0, run.changed_tasks
    failure = run.output.split("fatal:", 1)[-1]
    assert "This host's Redis refused the candidate" in failure and said in failure, failure[:3000]
    # The same files, the same process, serving the same user as before.
    assert broker_state() == before
    assert producer.rpush("taskstack:test:faults", "after") == 2
    assert sh("systemctl is-active redis-server").strip() == "active"
    producer.delete("taskstack:test:faults")
    # Nothing is left for the next boot to trip over: a restart comes back on the same files.
    sh("systemctl restart redis-server")
    wait_ready(client("celery"))


@DEBIAN12_ONLY
def test_a_stale_aof_never_wins_over_newer_data_in_the_snapshot(admin):
    """appendonly on -> off (the AOF files stay) -> newer writes -> stop -> appendonly on:
    the server must come back with the newer data, not with what the old AOF holds."""
    key = "taskstack:test:stale-aof"
    admin.set(key, "old")
    admin.bgrewriteaof()
    sh("sleep 2")
    assert run_playbook(extra_vars={"redis_appendonly": False}).rc == 0
    assert admin.info("persistence")["aof_enabled"] == 0
    assert sh("test -d /var/lib/redis/appendonlydir && echo stale").strip() == "stale"
    admin.set(key, "new")
    sh("systemctl stop redis-server")  # saves dump.rdb on the way down (save rules)
    run = run_playbook()
    assert run.rc == 0, run.output[-3000:]
    admin = client("admin")
    wait_ready(admin)
    value = admin.get(key)
    print(f"stale AOF: value after re-enabling appendonly = {value!r} (old AOF said 'old')")
    assert admin.info("persistence")["aof_enabled"] == 1
    assert value == "new"
    sh("systemctl restart redis-server")
    wait_ready(client("admin"))
    assert client("admin").get(key) == "new", "the AOF written on re-enabling must hold the newer data"
    client("admin").delete(key)
