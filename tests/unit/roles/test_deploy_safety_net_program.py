"""The deploy's safety net program (roles/celery_deploy/files/taskstack-celery-deploy-safety-net),
run with stand-ins for systemctl and systemd-run that record their arguments: what it arms,
what it gives back when it fires, and that a deploy cannot go on once it fired."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROGRAM = Path(__file__).resolve().parents[3] / "roles" / "celery_deploy" / "files" / \
    "taskstack-celery-deploy-safety-net"
NAME = "celery-demo-deploy-safety-net"
STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "{calls}"
exit 0
"""


@pytest.fixture(name="net")
def net_fixture(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for tool in ("systemctl", "systemd-run"):
        stub = bin_dir / tool
        stub.write_text(STUB.format(calls=calls))
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TASKSTACK_SAFETY_NET_DIR": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(PROGRAM), *args], env=env, capture_output=True, text=True, check=False)

    def recorded() -> list[str]:
        return calls.read_text().splitlines() if calls.exists() else []

    def log() -> str:
        return (tmp_path / f"{NAME}.log").read_text()

    return run, recorded, log


def test_arm_starts_a_transient_timer_that_fires_the_program_with_the_units(net):
    run, recorded, log = net
    assert run("begin", NAME).returncode == 0
    armed = run("arm", NAME, "75", "drain", "a.service,b.service", "-")
    assert armed.returncode == 0, armed.stderr
    timer = [call for call in recorded() if call.startswith("systemd-run ")][-1]
    assert f"--unit={NAME}" in timer and "--on-active=75s" in timer
    assert timer.endswith(f"fire {NAME} drain a.service,b.service -")
    assert "armed in phase drain for 75s" in log()


def test_fire_restarts_then_stops_warm_and_says_so(net):
    run, recorded, log = net
    run("begin", NAME)
    fired = run("fire", NAME, "drain", "old-a.service,old-b.service", "new-a.service")
    assert fired.returncode == 0, fired.stderr
    assert [call for call in recorded() if call.split()[1] in ("restart", "stop") and ".service" in call
            and NAME not in call] == [
        "systemctl restart old-a.service", "systemctl restart old-b.service", "systemctl stop new-a.service"]
    assert "fired in phase drain" in log() and "gave back (rc=0)" in log()


def test_a_deploy_that_comes_back_after_the_net_fired_is_stopped(net):
    run, _recorded, _log = net
    run("begin", NAME)
    run("arm", NAME, "10", "update", "a.service", "-")
    run("fire", NAME, "update", "a.service", "-")
    for args in (("arm", NAME, "10", "stop", "a.service", "-"), ("disarm", NAME)):
        late = run(*args)
        assert late.returncode == 3
        assert "the safety net fired before the deploy came back" in late.stderr


def test_begin_starts_a_new_log_and_keeps_the_previous_one(net, tmp_path):
    run, _recorded, log = net
    run("begin", NAME)
    run("fire", NAME, "drain", "a.service", "-")
    run("begin", NAME)
    assert "fired" not in log() and "deploy began" in log()
    assert "fired in phase drain" in (tmp_path / f"{NAME}.log.1").read_text()
    assert run("arm", NAME, "10", "drain", "a.service", "-").returncode == 0


@pytest.mark.parametrize("args", [("arm", "bad name;rm", "10", "drain", "-", "-"), ("arm", NAME, "ten", "drain", "-", "-"),
                                  ("arm", NAME, "10"), ("explode", NAME)])
def test_bad_arguments_change_nothing(net, args):
    run, recorded, _log = net
    assert run(*args).returncode == 2
    assert recorded() == []
