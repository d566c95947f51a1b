"""The testbed works: systemd is PID 1 and running, and the celery role laid its foundation."""

import pytest


def test_systemd_is_pid1_and_running(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    # is-system-running exits non-zero for "degraded": read the state it prints.
    state = host.run("systemctl is-system-running").stdout.strip()
    failed = host.run("systemctl --failed --no-legend --plain").stdout
    assert state == "running", f"systemd is {state!r}; failed units:\n{failed}"


def test_systemd_runs_a_hardened_unit(host):
    # The collection's units use PrivateTmp/ProtectSystem: systemd must be able to set up
    # their namespaces here (it cannot without CAP_SYS_ADMIN: status=226/NAMESPACE).
    unit = host.run(
        "systemd-run --wait --quiet -p PrivateTmp=yes -p ProtectSystem=strict"
        " -p NoNewPrivileges=yes -p DynamicUser=yes /bin/true"
    )
    assert unit.rc == 0, f"hardened transient unit failed: rc={unit.rc} {unit.stderr}"


def test_celery_system_user_cannot_log_in(host):
    user = host.user("celery")
    assert user.exists
    assert user.uid < 1000, "a system account, not a login user"
    assert user.group == "celery"
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin")
    assert user.home == "/var/lib/celery"


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/var/lib/celery", "celery", "celery", 0o750),
        ("/var/log/celery", "celery", "celery", 0o750),
        ("/etc/celery", "root", "celery", 0o750),
        ("/srv/celery/app", "root", "celery", 0o755),
    ],
)
def test_celery_directories_have_their_owner_and_mode(host, path, owner, group, mode):
    d = host.file(path)
    assert d.is_directory
    assert (d.user, d.group, d.mode) == (owner, group, mode)
