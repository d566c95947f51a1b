"""deploy.yml refuses, in its first play and before any host changes, a blue-green deploy that
nothing would build the new colour's release for.

Runs the real playbook against a local connection: the first play stops at the refusal, before
it installs the safety net program or takes the lock, so nothing on this machine changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_deploy(tmp_path: Path, worker_vars: dict) -> subprocess.CompletedProcess:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "vars": {**local, "celery_app": "demo.app"},
            "children": {
                "redis": {"hosts": {"broker": {}}},
                "celery_worker": {"hosts": {"worker": {"celery_redis_address": "127.0.0.1", **worker_vars}}},
            },
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        ["ansible-playbook", "-i", str(path), str(ROOT / "playbooks" / "deploy.yml"), "-e", "ansible_become=false"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


def test_blue_green_with_nothing_to_build_the_new_colour_is_refused_before_anything_changes(tmp_path):
    blue = tmp_path / "venv"
    (blue / "bin").mkdir(parents=True)
    (blue / "bin" / "python").write_text("")
    run = run_deploy(tmp_path, {
        "celery_deploy_strategy": "blue_green",
        "celery_deploy_install": False,
        "celery_venv": str(blue),
    })
    print(run.stdout[-3000:])
    assert run.returncode != 0
    assert "Refuse a blue-green deploy whose new colour has no release" in run.stdout
    assert f"but {blue}-green has no bin/python on worker" in run.stdout
    assert "Install the deploy's safety net program" not in run.stdout
    assert "Take the deploy lock" not in run.stdout
