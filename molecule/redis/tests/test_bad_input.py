"""Bad input stops the play in preflight, naming the variable and its value, before anything
changes."""

from __future__ import annotations

import pytest
from conftest import failure, run_playbook, sh

WATCHED = "/etc/redis/redis.conf /etc/redis/users.acl /etc/systemd/system/redis-server.service.d/taskstack.conf " \
          "/etc/sysctl.d/60-redis.conf /etc/systemd/system/redis-disable-thp.service"


def snapshot() -> str:
    return sh(f"sha256sum {WATCHED}; systemctl show -p ActiveState -p MainPID -p NRestarts redis-server")


@pytest.mark.parametrize(
    ("extra_vars", "task", "message"),
    [
        ({"redis_save": ["every minute"]}, "Check redis_save rules",
         ['redis_save must be a list of "SECONDS CHANGES" rules', '(got ["every minute"])']),
        ({"redis_maxmemory_policy": "allkeys-lru"}, "Refuse a maxmemory policy that evicts queued tasks",
         ["redis_maxmemory_policy 'allkeys-lru' evicts keys"]),
        ({"redis_bind": ["127.0.0.1", "0.0.0.0"]}, "Refuse plaintext on non-loopback addresses",
         ['redis_bind lists non-loopback addresses ["0.0.0.0"] while redis_tls is false']),
    ],
    ids=["invalid save rule", "evicting policy", "non-loopback bind without TLS"],
)
def test_bad_input_fails_in_preflight_naming_the_value_and_changes_nothing(extra_vars, task, message):
    before = snapshot()
    run = run_playbook(extra_vars=extra_vars)
    failed_task, msg = failure(run)
    print(f"{extra_vars}: rc={run.rc} changed={run.changed} failed at {failed_task!r}: {msg}")
    assert run.rc != 0
    assert run.failed == 1 and run.changed == 0
    # The check made for this input refused it, not some later task that happened to choke.
    assert failed_task == f"taskstack.celery.redis : {task}"
    for words in message:
        assert words in msg
    assert snapshot() == before
