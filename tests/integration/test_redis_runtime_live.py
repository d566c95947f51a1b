"""redis_runtime through Ansible against a real Redis: redis-py, ACL login, no password shown.

Its own redis-server on 127.0.0.1:6392 (the Celery tests use 6391) with an ACL file whose
admin user is the only way in, as the redis role leaves a server.
Run: .venv/bin/python -m pytest -q tests/integration   (needs redis-server on PATH)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

PORT = 6392
ADMIN_PASSWORD = "adm1n#p'ss$"  # '#', quote and '$': nothing may comment, quote or expand it


def _acl(*users: str) -> str:
    return "user default off\nuser admin on >%s ~* &* +@all\n%s" % (
        ADMIN_PASSWORD, "".join(u + "\n" for u in users))


@pytest.fixture
def redis_server(require_redis_server, tmp_path, live) -> Iterator[dict]:
    """A Redis with data in it, RDB only, reachable only as admin."""
    import redis

    acl = tmp_path / "users.acl"
    acl.write_text(_acl())
    conf = tmp_path / "redis.conf"
    conf.write_text("bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly no\naclfile %s\n"
                    % (PORT, tmp_path, acl))
    log = open(tmp_path / "redis.log", "wb")
    proc = subprocess.Popen([require_redis_server, str(conf)], stdout=log,
                            stderr=subprocess.STDOUT)
    client = redis.Redis(port=PORT, username="admin", password=ADMIN_PASSWORD,
                         decode_responses=True)

    def answers():
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "redis.log").read_text()[-2000:])
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    try:
        live.wait_for(answers, 15, "redis-server on %d" % PORT)
        client.mset({"k%d" % i: i for i in range(500)})
        yield {"client": client, "acl": acl, "dir": tmp_path}
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def _run(tmp_path: Path, live, module_args: dict, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    result_file = tmp_path / "result.json"
    play = [{
        "name": "redis_runtime", "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"name": "Run redis_runtime", "register": "runtime", "ignore_errors": True,
             "taskstack.celery.redis_runtime": dict(
                 {"login_port": PORT, "login_user": "admin", "login_password": ADMIN_PASSWORD},
                 **module_args)},
            {"name": "Save the result",
             "ansible.builtin.copy": {"content": "{{ runtime | to_json }}",
                                      "dest": str(result_file), "mode": "0600"}},
        ],
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(live.collections_root),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                          "-c", "local", str(playbook), *extra],
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run, json.loads(result_file.read_text())


def test_aof_is_switched_on_at_runtime_with_every_key_kept_and_no_password_shown(
        redis_server, tmp_path, live):
    run, result = _run(tmp_path, live, {"appendonly": True}, "-vvv")
    assert not result.get("failed"), result
    assert result["appendonly_switched"] is True and result["changed"] is True
    assert result["persistence"]["aof_enabled"] == "1"
    assert result["persistence"]["aof_last_bgrewrite_status"] == "ok"
    assert redis_server["client"].dbsize() == 500
    assert ADMIN_PASSWORD not in run.stdout + run.stderr
    assert "login_password" in run.stdout, "the -vvv output should list the module's arguments"


def test_runtime_settings_are_applied_and_fixed_ones_reported(redis_server, tmp_path, live):
    _run_ignored, result = _run(tmp_path, live, {
        "config": {"maxmemory": "64mb", "appendfsync": "always", "databases": 32},
        "restart_only": ["databases"]})
    assert result["changed_settings"] == ["appendfsync", "maxmemory"]
    assert redis_server["client"].config_get("maxmemory") == {"maxmemory": str(64 * 1024 ** 2)}
    assert result["restart_required"] is True
    assert [r.split(":")[0] for r in result["restart_reasons"]] == ["databases"]


def test_acl_load_reloads_the_file_and_logs_in_again(redis_server, tmp_path, live):
    redis_server["acl"].write_text(_acl("user celery on >c3lery ~* &* +@all"))
    _run_ignored, result = _run(tmp_path, live, {"acl_load": True})
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert "celery" in redis_server["client"].acl_users()


def test_refused_password_on_a_managed_server_fails_without_showing_it(redis_server, tmp_path,
                                                                       live):
    run, result = _run(tmp_path, live, {"login_password": "wrong pw", "wait_for_idle": True})
    assert result.get("failed") is True
    assert "cannot reach Redis" in result["msg"]
    assert "wrong pw" not in run.stdout + run.stderr
