"""The worker role's visibility-timeout check, as the role runs it (tasks/visibility.yml).

The entry point is run with a local connection and the app's settings given as the fact the
celery role's probe publishes (celery_app_config), so the role's wiring of the filter is tested
without a host: the failure names the variable, the value, the task and the limit, and a run
that could not probe the app says why instead of passing in silence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

CHECK = {
    "name": "Check the pools against the broker's visibility timeout",
    "ansible.builtin.include_role": {"name": "taskstack.celery.celery_worker", "tasks_from": "visibility"},
}
PROBE = {
    "name": "Load the app and publish its configuration",
    "ansible.builtin.include_role": {"name": "taskstack.celery.celery", "tasks_from": "probe"},
}
# The demo app, loaded by the celery role's probe in this toolchain's virtualenv (it has Celery).
DEMO_APP = {"celery_app_dir": str(ROOT / "tests" / "demo_app"), "celery_venv": str(Path(sys.prefix)),
            "celery_broker_url": "redis://127.0.0.1:1/0"}


def app_config(**changes) -> dict:
    config = {"main": "demo", "visibility_timeout": 3600, "task_acks_late": True, "worker_prefetch_multiplier": 1,
              "worker_disable_prefetch": False, "tasks": ["demo.tasks.add", "demo.tasks.report"],
              "task_time_limits": {"demo.tasks.add": None, "demo.tasks.report": None}}
    return config | changes


def run_check(tmp_path: Path, extra_vars: dict, probe: bool = False,
              args: tuple[str, ...] = ()) -> tuple[int, list[dict]]:
    """The return code and each task's result on the one host; with `probe`, the celery role
    loads the app first (as configure.yml does), else celery_app_config is given."""
    collections = tmp_path / "collections" / "ansible_collections" / "taskstack"
    collections.mkdir(parents=True)
    (collections / "celery").symlink_to(ROOT)
    play = {"name": "Run the visibility-timeout check", "hosts": "all", "gather_facts": False,
            "tasks": [PROBE, CHECK] if probe else [CHECK]}
    (tmp_path / "play.yml").write_text(yaml.safe_dump([play]))
    (tmp_path / "vars.json").write_text(json.dumps({"celery_app": "demo.app", **extra_vars}))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections"),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(
        ["ansible-playbook", "-i", "worker,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
         # The probe runs as this user: become would switch to celery_user, who is not here.
         "-e", "ansible_become=false", "-e", f"@{tmp_path / 'vars.json'}", *args, str(tmp_path / "play.yml")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    report = json.loads(run.stdout[run.stdout.index("{"):])
    return run.returncode, [task["hosts"]["worker"] for task in report["plays"][0]["tasks"] if "worker" in task["hosts"]]


def test_a_task_limit_past_the_timeout_fails_naming_the_task_and_the_limit(tmp_path):
    config = app_config(task_time_limits={"demo.tasks.add": None, "demo.tasks.report": 4000})
    rc, results = run_check(tmp_path, {"celery_app_config": config})
    assert rc != 0
    message = results[-1]["msg"]
    for part in ("Task 'demo.tasks.report'", "time_limit of 4000 s", "visibility_timeout of 3600 s"):
        assert part in message, (part, message)


def test_the_prefetch_wait_fails_naming_the_variables(tmp_path):
    rc, results = run_check(tmp_path, {"celery_app_config": app_config(), "celery_worker_prefetch_multiplier": 4,
                                       "celery_worker_time_limit": 1000})
    assert rc != 0
    message = results[-1]["msg"]
    for part in ("Pool 'default'", "celery_worker_prefetch_multiplier 4", "= 4000 s", "visibility_timeout of 3600 s"):
        assert part in message, (part, message)


def test_a_countdown_past_the_timeout_fails_naming_the_longest_it_can_take(tmp_path):
    rc, results = run_check(tmp_path, {"celery_app_config": app_config(), "celery_worker_max_eta_seconds": 3300})
    assert rc != 0
    assert "celery_worker_max_eta_seconds is 3300 s" in results[-1]["msg"]
    assert "The longest countdown this pool can take is 2999 s" in results[-1]["msg"]


def test_the_defaults_pass_and_publish_the_bounds(tmp_path):
    rc, results = run_check(tmp_path, {"celery_app_config": app_config(), "celery_worker_max_eta_seconds": 5})
    assert rc == 0, results
    facts = next(r["ansible_facts"]["celery_worker_visibility"] for r in results if "ansible_facts" in r)
    assert facts["checked"] is True
    assert facts["pools"][0]["bound"] == 300
    assert facts["pools"][0]["eta_bound"] == 605


@pytest.mark.parametrize(
    ("extra_vars", "reason"),
    [
        ({}, "celery_app_config is not set"),
        ({"celery_app_config": {"unavailable": "the virtualenv /srv/celery/venv does not exist yet"}},
         "the virtualenv /srv/celery/venv does not exist yet"),
    ],
    ids=["celery-role-did-not-run", "no-virtualenv"],
)
def test_a_run_that_could_not_probe_the_app_says_why(tmp_path, extra_vars, reason):
    rc, results = run_check(tmp_path, {**extra_vars, "celery_worker_time_limit": 99999})
    assert rc == 0
    warnings = [r["msg"] for r in results if "visibility-timeout check did not run" in str(r.get("msg", ""))]
    assert warnings, results
    assert reason in warnings[0]


def test_the_probe_reads_a_task_s_own_time_limit_from_the_loaded_app(tmp_path):
    # demo.long_limits: the demo app plus @app.task(time_limit=4000), past its visibility timeout.
    rc, results = run_check(tmp_path, {**DEMO_APP, "celery_app": "demo.long_limits"}, True)
    assert rc != 0
    assert "Task 'demo.long_limits.export' has its own time_limit of 4000 s" in results[-1]["msg"]


def test_the_probe_of_the_demo_app_passes(tmp_path):
    rc, results = run_check(tmp_path, DEMO_APP, True)
    assert rc == 0, results
    facts = next(r["ansible_facts"]["celery_worker_visibility"] for r in results
                 if "celery_worker_visibility" in r.get("ansible_facts", {}))
    assert facts["checked"] is True


def test_check_mode_without_the_virtualenv_says_the_check_did_not_run(tmp_path):
    # A new host under --check: install.yml created nothing, so the app cannot be loaded.
    rc, results = run_check(tmp_path, {**DEMO_APP, "celery_venv": str(tmp_path / "no-venv")}, True, ("--check",))
    assert rc == 0
    warnings = [r["msg"] for r in results if "visibility-timeout check did not run" in str(r.get("msg", ""))]
    assert warnings, results
    assert f"the virtualenv {tmp_path / 'no-venv'} does not exist yet (check mode" in warnings[0]
