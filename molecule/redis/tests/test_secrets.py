"""No password in the converge output (--diff -vvv), the journal, or any command line seen in
the container during the whole scenario; converging is idempotent."""

from __future__ import annotations

import re
import time

import pytest
from conftest import (
    PASSWORD_NAMES,
    PLAYBOOK_OUTPUTS,
    client,
    main_pid,
    password,
    run_playbook,
    sh,
    task_results,
    wait_ready,
)


STALE_USER = "taskstack-stale"
DROPIN = "/etc/systemd/system/redis-server.service.d/taskstack.conf"


@pytest.fixture(scope="module")
def verbose_converge():
    """A converge under --diff -vvv that takes every path a password goes through: the host is
    left with an ACL file and a drop-in the role must rewrite, so the run writes the ACL file,
    reloads it on the live server (ACL LOAD, as the admin user) and restarts Redis (waiting for
    it to be idle first, as the admin user). Made here, so the test needs no test before it."""
    client("admin").acl_setuser(STALE_USER, enabled=False)
    sh(f"echo 'user {STALE_USER} off' >> /etc/redis/users.acl; "
       f"sed -i 's/^LimitNOFILE=.*/LimitNOFILE=65000/' {DROPIN}; systemctl daemon-reload")
    pid = main_pid()
    run = run_playbook("--diff", "-vvv")
    assert run.rc == 0, run.output[-3000:]
    return run, pid


def test_verbose_converge_reloads_the_acl_and_restarts_redis(verbose_converge, admin):
    """The converge the scans below read did run ACL LOAD and the restart: the output says so
    and the server shows it (a clean run would have nothing to leak)."""
    run, pid = verbose_converge
    runtime = task_results(run.output, "Apply the settings Redis takes at runtime and learn whether a restart is needed")
    statuses = [re.search(r"^(ok|changed|skipping|fatal): \[", text, re.M) for text in runtime]
    assert [m and m.group(1) for m in statuses] == ["changed"], runtime
    assert '"acl_load": true' in runtime[0], "the role did not ask for ACL LOAD"
    assert "RUNNING HANDLER [taskstack.celery.redis : Restart redis-server]" in run.output
    wait_ready(admin)
    assert main_pid() != pid, "Redis was not restarted for the changed drop-in"
    assert admin.acl_getuser(STALE_USER) is None, "the live server still holds a user the role's file lacks"


def test_verbose_converge_with_diff_shows_no_password(verbose_converge):
    run = verbose_converge[0]
    for name in PASSWORD_NAMES:
        assert password(name) not in run.output, f"{name} in the -vvv --diff output"


def test_no_playbook_run_of_the_scenario_printed_a_password(verbose_converge):
    print(f"searched {len(PLAYBOOK_OUTPUTS)} ansible-playbook outputs")
    for output in PLAYBOOK_OUTPUTS:
        for name in PASSWORD_NAMES:
            assert password(name) not in output, name


def test_journal_holds_no_password(verbose_converge):
    # Verbose export: messages plus the _CMDLINE of every process that logged.
    journal = sh("journalctl --no-pager -o verbose")
    print(f"searched {len(journal.splitlines())} journal lines")
    assert "redis_runtime" in journal, "the module's invocations should be in the journal (masked)"
    for name in PASSWORD_NAMES:
        assert password(name) not in journal, name


def test_no_command_line_in_the_container_held_a_password(verbose_converge):
    time.sleep(0.5)
    seen = sh("cat /root/taskstack-cmdlines.log; cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    lines = seen.splitlines()
    print(f"searched {len(lines)} distinct command lines recorded during the scenario")
    assert any("redis-server" in line for line in lines)
    assert any("AnsiballZ" in line or "ansible" in line for line in lines), "the sampler missed ansible"
    for name in PASSWORD_NAMES:
        assert not [l for l in lines if password(name) in l], name


def test_second_converge_changes_nothing(verbose_converge):
    run = run_playbook()
    assert run.rc == 0
    assert run.changed == 0, [l for l in run.output.splitlines() if l.startswith("changed:")]
    assert client("admin").acl_getuser(STALE_USER) is None
