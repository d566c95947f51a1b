"""Bad input stops the play in preflight, naming the variable, before anything changes."""

from __future__ import annotations

import pytest
from conftest import run_playbook, sh

WATCHED = "/etc/redis/redis.conf /etc/redis/users.acl /etc/systemd/system/redis-server.service.d/taskstack.conf " \
          "/etc/sysctl.d/60-redis.conf /etc/systemd/system/redis-disable-thp.service"


def snapshot() -> str:
    return sh(f"sha256sum {WATCHED}; systemctl show -p ActiveState -p MainPID -p NRestarts redis-server")


@pytest.mark.parametrize(
    ("extra_vars", "variable"),
    [
        ({"redis_save": ["every minute"]}, "redis_save"),
        ({"redis_maxmemory_policy": "allkeys-lru"}, "redis_maxmemory_policy"),
        ({"redis_bind": ["127.0.0.1", "0.0.0.0"]}, "redis_bind"),
    ],
    ids=["invalid save rule", "evicting policy", "non-loopback bind without TLS"],
)
def test_bad_input_fails_in_preflight_and_changes_nothing(extra_vars, variable):
    before = snapshot()
    run = run_playbook(extra_vars=extra_vars)
    failed_task = [l for l in run.output.splitlines() if l.startswith("TASK [")][-1]
    print(f"{variable}: rc={run.rc} changed={run.changed} failed at {failed_task}")
    assert run.rc != 0
    assert run.failed == 1 and run.changed == 0
    assert "preflight" in run.output.lower() or "Check" in failed_task or "Refuse" in failed_task
    assert variable in run.output.split("fatal:", 1)[1]
    assert snapshot() == before
