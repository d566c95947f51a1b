"""celery_queue_purge's run(): its helper goes through celery_control.run_program like every helper."""

from __future__ import annotations

import json
import subprocess

import pytest

from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import CeleryControlError, HelperTarget
from ansible_collections.taskstack.celery.plugins.modules import celery_queue_purge

TARGET = HelperTarget("proj", "/srv/proj", "/opt/venv", {"CELERY_BROKER_URL": "redis://u:hunter2@h/0"},
                      secrets=["hunter2"])
REQUEST = celery_queue_purge.request_for({"app": "proj", "queue": "mail", "expect": None, "timeout": 2.0}, False)


def _runner(stdout: str, stderr: str = "", returncode: int = 0, seen: list | None = None):
    def run(argv, **kwargs):
        if seen is not None:
            seen.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)
    return run


def test_run_feeds_the_queue_program_to_the_venv_python_and_returns_its_answer():
    answer = {"ok": True, "keys": {"mail": {"count": 2, "sha256": "x"}}}
    seen: list = []
    assert celery_queue_purge.run(TARGET, REQUEST, runner=_runner(json.dumps(answer), seen=seen)) == answer
    argv, kwargs = seen[0]
    assert argv == ["/opt/venv/bin/python", "-"] and kwargs["cwd"] == "/srv/proj"
    assert "main(" in kwargs["input"] and '"queue": "mail"' in kwargs["input"]
    assert "hunter2" not in " ".join(argv)


def test_a_failed_answer_is_an_error_without_the_secret():
    answer = {"ok": False, "error": "broker_unreachable", "message": "auth failed for hunter2"}
    with pytest.raises(CeleryControlError) as raised:
        celery_queue_purge.run(TARGET, REQUEST, runner=_runner(json.dumps(answer), stderr="hunter2", returncode=1))
    assert raised.value.kind == "broker_unreachable"
    assert "hunter2" not in str(raised.value) and "hunter2" not in raised.value.detail
