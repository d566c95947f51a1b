"""site.yml's first play stops the whole run when any host's input is bad.

Runs the real playbook against local connections with `--tags never_a_real_tag`: only the tasks
tagged `always` run (the preflight play, and the argument validation Ansible puts at the top of
every role), so nothing on this machine changes. A Redis host with bad input must keep the
worker host out of every later play.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_site(tmp_path: Path, redis_vars: dict) -> subprocess.CompletedProcess:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "vars": {**local, "celery_app": "demo.app"},
            "children": {
                "redis": {"hosts": {"broker": redis_vars}},
                # Both are this machine: the worker reaches the broker on loopback.
                "celery_worker": {"hosts": {"worker": {"celery_redis_address": "127.0.0.1"}}},
            },
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_BECOME_METHOD": "su" if os.geteuid() else "sudo"}
    return subprocess.run(
        ["ansible-playbook", "-i", str(path), str(ROOT / "playbooks" / "site.yml"), "--tags", "never_a_real_tag",
         "-e", "ansible_become=false"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


def later_plays(output: str) -> str:
    return output.split("PLAY [Provision the Redis broker]", 1)[-1] if "PLAY [Provision" in output else ""


def test_a_good_inventory_passes_every_check(tmp_path):
    run = run_site(tmp_path, {})
    assert run.returncode == 0, run.stdout[-3000:]
    assert "ok: [worker]" in later_plays(run.stdout)


def test_a_redis_host_with_bad_input_stops_the_worker_hosts_too(tmp_path):
    run = run_site(tmp_path, {"redis_maxmemory_policy": "allkeys-lru"})
    assert run.returncode != 0
    assert "redis_maxmemory_policy 'allkeys-lru' evicts keys" in run.stdout
    # Without any_errors_fatal the worker host went on into the provisioning plays.
    assert "[worker]" not in later_plays(run.stdout), later_plays(run.stdout)[:3000]
