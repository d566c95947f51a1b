"""Check mode reports what would change and changes nothing, on files and on the live server."""

from __future__ import annotations

from conftest import client, main_pid, run_playbook, sh


def test_check_mode_reports_a_change_and_makes_none():
    """Also shows that plaintext on a non-loopback address passes preflight when accepted
    explicitly (test_bad_input shows it fails without redis_allow_plaintext_remote)."""
    admin = client("admin")
    before = sh("sha256sum /etc/redis/redis.conf /etc/redis/users.acl")
    pid = main_pid()
    run = run_playbook("--check", "--diff", extra_vars={
        "redis_appendfsync": "always",
        "redis_bind": ["127.0.0.1", "0.0.0.0"],
        "redis_allow_plaintext_remote": True,
    })
    assert run.rc == 0, run.output[-3000:]
    print(f"check mode with redis_appendfsync=always and a plaintext 0.0.0.0 bind: changed={run.changed}")
    assert run.changed >= 1
    assert "+appendfsync always" in run.output
    assert "+bind 127.0.0.1 0.0.0.0" in run.output
    assert sh("sha256sum /etc/redis/redis.conf /etc/redis/users.acl") == before
    assert admin.config_get("appendfsync")["appendfsync"] == "everysec"
    assert main_pid() == pid
