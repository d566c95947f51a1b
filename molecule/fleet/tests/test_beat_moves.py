"""Moving beat from one host to another in the inventory never leaves two beats running.

Before, re-running site.yml with beat moved from host a to host b started beat on b and left
the one on a running: every periodic task then fired twice. site.yml now stops and removes beat
on every Celery host outside the celery_beat group before any host starts it.
"""

from __future__ import annotations

import os

import pytest
import testinfra
from stacklib import converge, write_inventory

DISTRO = os.environ.get("MOLECULE_DISTRO", "debian12")
HOSTS = {"a": f"taskstack-fleet-{DISTRO}-a", "b": f"taskstack-fleet-{DISTRO}-b"}
BEAT = "celery-demo-beat.service"


def beat_on(host_key: str):
    return write_inventory({"celery_beat": {"hosts": {HOSTS[host_key]: {}}}})


def beat_state(host) -> tuple[str, str]:
    active = host.run(f"systemctl is-active {BEAT}").stdout.strip()
    enabled = host.run(f"systemctl is-enabled {BEAT}").stdout.strip()
    return active, enabled


@pytest.fixture(scope="module")
def hosts():
    return {key: testinfra.get_host(f"docker://{name}") for key, name in HOSTS.items()}


@pytest.mark.skipif(DISTRO != "debian12", reason="inventory logic, the same on every distro: Debian 12 only")
def test_moving_beat_to_another_host_stops_it_on_the_first(hosts):
    run = converge("--tags", "celery_beat", inventories=[beat_on("a")])
    assert run.rc == 0, run.output[-3000:]
    assert beat_state(hosts["a"]) == ("active", "enabled")

    run = converge("--tags", "celery_beat", inventories=[beat_on("b")])
    assert run.rc == 0, run.output[-3000:]
    a, b = beat_state(hosts["a"]), beat_state(hosts["b"])
    print(f"beat moved a -> b: a {a}, b {b}")
    assert b == ("active", "enabled")
    assert a[0] != "active", "beat still runs on the host it moved away from: every schedule fires twice"
    assert not hosts["a"].file(f"/etc/systemd/system/{BEAT}").exists

    # Back to the scenario's inventory (no beat): the other tests run without one.
    run = converge("--tags", "celery_beat")
    assert run.rc == 0, run.output[-3000:]
    assert beat_state(hosts["b"])[0] != "active"
