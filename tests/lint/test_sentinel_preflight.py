"""site.yml refuses a replicated Redis group or a set of sentinels that cannot work, in its first
play, before any host changes (#12): fewer than three sentinels, a quorum larger than the
sentinels, a data node without AOF, the primary listed twice (two primaries, or two data nodes on
one address:port), no primary, a standalone node beside replicated ones. A quorum below a majority
is legal in Redis: a warning, not a failure.

Runs the real playbook against local connections with `--tags never_a_real_tag`, as
test_site_preflight.py does: only the tasks tagged `always` run (the preflight play and the
argument validation of every role), so nothing on this machine changes. Each case is an inventory
of its own (the checks are about the group); the runs go in parallel.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def group(roles: dict[str, str], sentinels: list[str], data_vars: dict | None = None,
          sentinel_vars: dict | None = None) -> dict:
    """An inventory: data nodes (name: replication role) on ports of their own, and sentinels."""
    data_vars = data_vars or {}
    return {
        "redis": {"hosts": {h: {"redis_port": free_port(), "redis_replication_role": role, **data_vars.get(h, {})}
                            for h, role in roles.items()}},
        "redis_sentinel": {"hosts": {h: {"sentinel_port": free_port()} for h in sentinels}},
        "_sentinel_vars": sentinel_vars or {},
    }


THREE = ["a", "b", "c"]
GOOD = {"a": "primary", "b": "replica", "c": "replica"}

CASES = {
    "a good group passes every check": (group(GOOD, THREE), None),
    "two sentinels": (group(GOOD, ["a", "b"]), ["Group redis_sentinel has 2 sentinels", "at least three"]),
    "a quorum larger than the sentinels": (
        group(GOOD, THREE, sentinel_vars={"sentinel_quorum": 4}), ["sentinel_quorum", "is 4 with 3 sentinels"]),
    "a quorum below a majority is only a warning": (group(GOOD, THREE, sentinel_vars={"sentinel_quorum": 1}), None),
    "a replica without AOF": (
        group(GOOD, THREE, data_vars={"c": {"redis_appendonly": False}}), ["c would run without", "AOF"]),
    "two primaries": (
        group({"a": "primary", "b": "primary", "c": "replica"}, THREE),
        ["2 hosts have", "redis_replication_role: primary", "a, b"]),
    "the primary listed twice under two names": (
        {**group(GOOD, THREE), "_same_port": ["a", "d"]}, ["share an address:port", "a, d"]),
    "no primary": (group({"a": "replica", "b": "replica", "c": "replica"}, THREE), ["no host has", "primary"]),
    "a standalone node beside replicated ones": (
        group({"a": "primary", "b": "replica", "c": "standalone"}, THREE), ["c is", "standalone beside"]),
    "another fsync mode than the primary's": (
        group(GOOD, THREE, data_vars={"b": {"redis_appendfsync": "always"}}), ["b differ from", "redis_appendfsync"]),
}


def run_case(tmp: Path, name: str, case: dict) -> subprocess.CompletedProcess:
    case = dict(case)
    sentinel_vars = case.pop("_sentinel_vars", {})
    same_port = case.pop("_same_port", None)
    if same_port:
        first, second = same_port
        case["redis"]["hosts"][second] = {**case["redis"]["hosts"][first], "redis_replication_role": "replica"}
    inventory = {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "redis_replication_address": "127.0.0.1", **sentinel_vars},
        "children": case,
    }}
    path = tmp / f"{name.replace(' ', '_')}.yml"
    path.write_text(yaml.safe_dump(inventory))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        ["ansible-playbook", "-i", str(path), str(ROOT / "playbooks" / "site.yml"), "--tags", "never_a_real_tag",
         "-e", "ansible_become=false"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("sentinel-preflight")
    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = {name: pool.submit(run_case, tmp, name, case) for name, (case, _expected) in CASES.items()}
    return {name: future.result() for name, future in futures.items()}


def first_play(output: str) -> str:
    return output.split("PLAY [Drain the old workers", 1)[0]


@pytest.mark.parametrize("case", [name for name, (_case, expected) in CASES.items() if expected])
def test_a_group_that_cannot_work_is_refused_before_any_change(runs, case):
    run = runs[case]
    assert run.returncode != 0, f"{case}: passed the preflight\n{run.stdout[-3000:]}"
    text = " ".join(first_play(run.stdout).split())
    for snippet in CASES[case][1]:
        assert snippet in text, (snippet, text[-3000:])
    assert "Nothing was changed" in text
    # Stopped in the check play: no provisioning play ran on any host.
    assert "PLAY [Provision the Redis broker]" not in run.stdout


def test_a_good_group_passes_every_check_without_a_warning(runs):
    run = runs["a good group passes every check"]
    assert run.returncode == 0, run.stdout[-3000:]
    assert "WARNING: sentinel_quorum" not in run.stdout
    assert "PLAY [Provision Redis Sentinel]" in run.stdout


def test_a_quorum_below_a_majority_passes_with_a_warning(runs):
    run = runs["a quorum below a majority is only a warning"]
    assert run.returncode == 0, run.stdout[-3000:]
    text = " ".join(run.stdout.split())
    assert "WARNING: sentinel_quorum 1 is below a majority (2) of the 3 sentinels" in text
