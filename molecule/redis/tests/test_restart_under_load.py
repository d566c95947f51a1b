"""A restart the role performs while a producer writes loses no acknowledged item."""

from __future__ import annotations

from conftest import DEBIAN12_ONLY, Producer, client, main_pid, missing_items, run_playbook, sh, wait_ready


def converge_under_load(key: str, extra_vars: dict | None) -> None:
    admin = client("admin")
    admin.delete(key)
    before = main_pid()
    with Producer(6379, "celery", key) as producer:
        producer.wait_for(1000)
        run = run_playbook(extra_vars=extra_vars)
        producer.wait_for(len(producer.acked) + 1000)
    assert run.rc == 0, run.output[-3000:]
    assert "RUNNING HANDLER [taskstack.celery.redis : Restart redis-server]" in run.output
    assert main_pid() != before, "the role was expected to restart Redis"
    print(f"{key}: attempted={producer.attempted} errors={producer.errors} "
          f"longest pause between acks={producer.longest_gap:.2f}s")
    missing = missing_items(6379, "celery", key, producer.acked)
    assert missing == [], f"{len(missing)} acknowledged items lost, first {missing[:10]}"
    wait_ready(admin)
    admin.delete(key)


def test_role_restart_for_a_unit_change_loses_nothing_while_a_producer_writes():
    # LimitNOFILE lives in the drop-in: only a restart applies it.
    converge_under_load("taskstack:test:role-restart", {"redis_limit_nofile": 65000})
    assert sh("systemctl show -p LimitNOFILE --value redis-server").strip() == "65000"


@DEBIAN12_ONLY
def test_an_acl_change_is_loaded_without_a_restart(admin):
    """ACL LOAD (a rotated password, a user removed) takes effect at once: the role must not
    restart Redis for it, which would drop every client and leave a worker's prefetched
    messages in `unacked` until the visibility timeout."""
    user = "taskstack-acl-only"
    admin.acl_setuser(user, enabled=False)
    sh(f"echo 'user {user} off' >> /etc/redis/users.acl")
    before = main_pid()
    run = run_playbook()
    assert run.rc == 0, run.output[-3000:]
    wait_ready(admin)
    assert admin.acl_getuser(user) is None, "the ACL file was not loaded"
    assert main_pid() == before, "Redis was restarted for a change it takes at runtime"
    assert "RUNNING HANDLER [taskstack.celery.redis : Restart redis-server]" not in run.output
