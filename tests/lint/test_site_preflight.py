"""site.yml refuses bad input in its first play, on every host, before any host changes.

Runs the real playbook against local connections with `--tags never_a_real_tag`: only the tasks
tagged `always` run (the preflight play, and the argument validation Ansible puts at the top of
every role), so nothing on this machine changes. Every bad value must fail there, with a message
that names the variable and the value; a good inventory must pass every check.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port nothing listens on now. The preflight looks at what holds the Redis and
    Flower ports of this machine (and asks a Redis there without a password): on ports of their
    own the checks here do not depend on what else this machine runs (a Redis on 6379, another
    scenario's Flower on 5555)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def own_ports() -> dict:
    return {"redis_port": free_port(), "flower_port": free_port()}


def run_site(tmp_path: Path, redis_vars: dict | None = None, worker_vars: dict | None = None,
             ) -> subprocess.CompletedProcess:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "vars": {**local, "celery_app": "demo.app", **own_ports()},
            "children": {
                "redis": {"hosts": {"broker": redis_vars or {}}},
                # Both are this machine: the worker reaches the broker on loopback.
                "celery_worker": {"hosts": {"worker": {"celery_redis_address": "127.0.0.1", **(worker_vars or {})}}},
                "flower": {"hosts": {"worker": {}}},
            },
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        ["ansible-playbook", "-i", str(path), str(ROOT / "playbooks" / "site.yml"), "--tags", "never_a_real_tag",
         "-e", "ansible_become=false"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


def first_play(output: str) -> str:
    return output.split("PLAY [Provision", 1)[0]


def later_plays(output: str) -> str:
    return output.split("PLAY [Provision the Redis broker]", 1)[-1] if "PLAY [Provision" in output else ""


def test_a_good_inventory_passes_every_check(tmp_path):
    run = run_site(tmp_path, worker_vars={
        "celery_worker_extra_args": ["-E", "--without-gossip", "-Ofair"],
        "celery_worker_pools": [{"name": "io", "queues": ["io.high", "io:low"], "autoscale": "8,2"}],
        "flower_extra_args": ["--xheaders=True"],
    }, redis_vars={"redis_extra_config": {"hz": 20, "lazyfree-lazy-user-del": True, "notify-keyspace-events": ""}})
    assert run.returncode == 0, run.stdout[-3000:]
    assert "ok: [worker]" in later_plays(run.stdout)


def test_a_redis_host_with_bad_input_stops_the_worker_hosts_too(tmp_path):
    run = run_site(tmp_path, {"redis_maxmemory_policy": "allkeys-lru"})
    assert run.returncode != 0
    assert "redis_maxmemory_policy 'allkeys-lru' evicts keys" in run.stdout
    # Without any_errors_fatal the worker host went on into the provisioning plays.
    assert "[worker]" not in later_plays(run.stdout), later_plays(run.stdout)[:3000]


# Each value reaches a unit file, a command line, redis.conf or the ACL file; each must be
# refused by the first play of site.yml, the message naming the variable and the value. All
# cases run in one ansible-playbook run: that play, taken from site.yml as it is, with one
# inventory host per case (and no any_errors_fatal, so one case does not stop the others).
BAD_WORKER_VALUES = {
    "queue with a comma consumes two queues": (
        {"celery_worker_pools": [{"name": "a", "queues": ["a,b"]}]}, ["Queue names in celery_worker_pools", "a,b"]),
    "queue name smuggling --beat": (
        {"celery_worker_pools": [{"name": "a", "queues": ["celery --beat"]}]}, ["Queue names", "celery --beat"]),
    "newline in a queue adds a unit line run as root": (
        {"celery_worker_pools": [{"name": "a", "queues": ["q\nExecStartPre=+/bin/touch /pwned"]}]},
        ["Queue names", "ExecStartPre"]),
    "beat in a cluster of short flags": (
        {"celery_worker_extra_args": ["-EB"]}, ["must not run beat", "-EB"]),
    "beat in a pool's extra_args": (
        {"celery_worker_pools": [{"name": "a", "queues": ["q"], "extra_args": ["--beat"]}]},
        ["must not run beat", "--beat"]),
    "an option the role manages": (
        {"celery_worker_extra_args": ["--concurrency=64", "-Qother"]}, ["set what the role manages", "--concurrency=64", "-Qother"]),
    "a percent sign systemd expands": (
        {"celery_worker_extra_args": ["--max-tasks-per-child=%h"]}, ["celery_worker_extra_args", "%h"]),
    "a pool implementation Celery does not know": (
        {"celery_worker_pools": [{"name": "a", "queues": ["q"], "pool": "prefork\nUser=root"}]},
        ["celery_worker_pools", "pool"]),
    "a log level with a line break": (
        {"celery_worker_pools": [{"name": "a", "queues": ["q"], "loglevel": "INFO\nUser=root"}]},
        ["celery_worker_pools", "loglevel"]),
    "a prefetch multiplier that is no number": (
        {"celery_worker_pools": [{"name": "a", "queues": ["q"], "prefetch_multiplier": "1 --beat"}]},
        ["prefetch_multiplier", "1 --beat"]),
    "autoscale that is no MAX,MIN": (
        {"celery_worker_autoscale": "10,3 -B"}, ["celery_worker_autoscale", "10,3 -B"]),
    "flower bound to every address through extra args": (
        {"flower_extra_args": ["--address=0.0.0.0"]}, ["flower_extra_args", "--address=0.0.0.0"]),
    "flower auth switched off through extra args, dash spelling": (
        {"flower_extra_args": ["--basic-auth="]}, ["flower_extra_args", "--basic-auth="]),
    "flower's API opened through the app's environment": (
        {"celery_environment": {"FLOWER_UNAUTHENTICATED_API": "true"}}, ["celery_environment", "FLOWER_UNAUTHENTICATED_API"]),
    "an app directory with a space": (
        {"celery_app_dir": "/srv/my app"}, ["celery_app_dir", "/srv/my app"]),
}

BAD_REDIS_VALUES = {
    "upper-case eviction policy": (
        {"redis_extra_config": {"MAXMEMORY-POLICY": "allkeys-lru"}}, ["redis_extra_config", "maxmemory-policy"]),
    "upper-case bind to every address": (
        {"redis_extra_config": {"BIND": "0.0.0.0"}}, ["redis_extra_config", "bind"]),
    "replication from another server": (
        {"redis_extra_config": {"replicaof": "10.0.0.1 6379"}}, ["redis_extra_config", "replicaof"]),
    "a module loaded into the broker": (
        {"redis_extra_config": {"loadmodule": "/tmp/evil.so"}}, ["redis_extra_config", "loadmodule"]),
    "a renamed command": ({"redis_extra_config": {"Rename-Command": "FLUSHALL x"}}, ["redis_extra_config", "rename-command"]),
    "two keys that differ only in case": (
        {"redis_extra_config": {"hz": 10, "HZ": 50}}, ["more than once", "hz"]),
    "a value with a line break": (
        {"redis_extra_config": {"hz": "10\nbind 0.0.0.0"}}, ["redis_extra_config values", "hz"]),
    "a value that is a list": ({"redis_extra_config": {"hz": [1, 2]}}, ["redis_extra_config values", "hz"]),
    "a Celery command that is no command": (
        {"redis_celery_commands": ["get", "+@all"]}, ["redis_celery_commands", "+@all"]),
}


@pytest.fixture(scope="module")
def preflight_results(tmp_path_factory) -> dict[str, str]:
    """Each host's failure message (empty when it passed every check), from one run."""
    tmp = tmp_path_factory.mktemp("preflight")
    play = yaml.safe_load((ROOT / "playbooks" / "site.yml").read_text())[0]
    assert play["name"] == "Check the inventory before changing any host"
    play.pop("any_errors_fatal")
    (tmp / "preflight.yml").write_text(yaml.safe_dump([play]))
    hosts = {f"w{i}": case[0] for i, case in enumerate(BAD_WORKER_VALUES.values())}
    hosts |= {f"r{i}": case[0] for i, case in enumerate(BAD_REDIS_VALUES.values())}
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {
        "vars": {**local, "celery_app": "demo.app", "celery_redis_address": "127.0.0.1", **own_ports()},
        "children": {
            # The good host first: it is the broker the worker hosts' checks look at.
            "redis": {"hosts": {"good": {}} | {h: v for h, v in hosts.items() if h.startswith("r")}},
            "celery_worker": {"hosts": {"good": {}} | {h: v for h, v in hosts.items() if h.startswith("w")}},
            "flower": {"hosts": {"good": {}} | {h: {} for h in hosts if h.startswith("w")}},
        },
    }}
    (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory))
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(
        ["ansible-playbook", "-i", str(tmp / "inventory.yml"), str(tmp / "preflight.yml"), "-e", "ansible_become=false",
         "--forks", "10"],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=ROOT / "playbooks",
    )
    report = json.loads(run.stdout[run.stdout.index("{"):])
    messages = {host: "" for host in ["good", *hosts]}
    for task in report["plays"][0]["tasks"]:
        for host, result in task["hosts"].items():
            if result.get("failed"):
                messages[host] = json.dumps(result)
    return {"good": messages["good"]} | {
        name: messages[f"w{i}"] for i, name in enumerate(BAD_WORKER_VALUES)
    } | {name: messages[f"r{i}"] for i, name in enumerate(BAD_REDIS_VALUES)}


def test_the_good_host_beside_the_bad_ones_passes(preflight_results):
    assert preflight_results["good"] == ""


@pytest.mark.parametrize("case", [*BAD_WORKER_VALUES, *BAD_REDIS_VALUES])
def test_a_bad_value_is_refused_with_its_variable_and_value(preflight_results, case):
    expected = (BAD_WORKER_VALUES | BAD_REDIS_VALUES)[case][1]
    failure = json.loads(preflight_results[case]) if preflight_results[case] else {}
    assert failure, f"{case}: passed the preflight"
    text = " ".join([failure.get("msg", "")] + [str(e) for e in failure.get("argument_errors", [])])
    for snippet in expected:
        assert snippet in text, (snippet, text[:2000])
