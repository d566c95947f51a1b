"""No password in the converge output (--diff -vvv), the journal, or any command line seen in
the container during the whole scenario; converging is idempotent."""

from __future__ import annotations

import time

import pytest
from conftest import PASSWORD_NAMES, PLAYBOOK_OUTPUTS, client, password, run_playbook, sh


@pytest.fixture(scope="module")
def verbose_converge():
    # Back to the defaults after test_restart_under_load: the ACL file changes (ACL LOAD) and the
    # drop-in changes (restart), so the secret-handling paths all run under --diff -vvv.
    run = run_playbook("--diff", "-vvv")
    assert run.rc == 0, run.output[-3000:]
    return run


def test_verbose_converge_with_diff_shows_no_password(verbose_converge):
    assert "ACL LOAD" in verbose_converge.output or "acl_load" in verbose_converge.output
    for name in PASSWORD_NAMES:
        assert password(name) not in verbose_converge.output, f"{name} in the -vvv --diff output"


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
    assert client("admin").acl_getuser("monitoring") is None
