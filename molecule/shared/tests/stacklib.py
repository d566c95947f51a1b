"""Helpers the scenario tests share: run the collection's playbook again, run code in the app's
virtualenv on a test host, read the controller-side secrets, snapshot a host's state.

Imported by each scenario's tests/conftest.py (it puts molecule/shared/tests on sys.path).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[3]
CONVERGE = PROJECT / "molecule" / "shared" / "converge.yml"
# Checks of the roles' own logic, the same on every distro: Debian 12 only, so the suite stays in
# its time budget (what differs between the distros' Redis, Python or systemd runs on both).
DEBIAN12_ONLY = pytest.mark.skipif(os.environ.get("MOLECULE_DISTRO", "debian12") != "debian12",
                                   reason="role logic, the same on every distro: Debian 12 only")


def inventory_dir() -> Path:
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"


def credential(host_name: str, name: str) -> str:
    """A secret the roles generated and keep on the controller."""
    return (inventory_dir() / "credentials" / host_name / f"{name}.txt").read_text().strip()


@dataclass
class PlaybookRun:
    rc: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host."""
        recap: dict[str, dict[str, int]] = {}
        for line in self.output.splitlines():
            m = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line)
            if m:
                recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        return recap

    def changed(self) -> int:
        return sum(host.get("changed", 0) for host in self.recap().values())


def converge_command(*args: str, extra_vars: dict | None = None,
                     inventories: list[Path] | None = None, playbook: Path = CONVERGE) -> list[str]:
    """ansible-playbook running taskstack.celery.site (the shared converge.yml), or another
    playbook, against the scenario's inventory as the scenario does."""
    cmd = ["ansible-playbook", "-i", str(inventory_dir())]
    for extra in inventories or []:
        cmd += ["-i", str(extra)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    return [*cmd, *args, str(playbook)]


def converge(*args: str, extra_vars: dict | None = None, inventories: list[Path] | None = None,
             timeout: int = 900, playbook: Path = CONVERGE) -> PlaybookRun:
    cmd = converge_command(*args, extra_vars=extra_vars, inventories=inventories, playbook=playbook)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def converge_in_background(*args: str, extra_vars: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(converge_command(*args, extra_vars=extra_vars), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def connection_vars(host_name: str) -> dict:
    """The connection settings Molecule gave a test host, to alias it in an extra inventory."""
    import yaml

    inv = yaml.safe_load((inventory_dir() / "ansible_inventory.yml").read_text())
    # The docker connection reaches the container named by ansible_host, else by the inventory
    # name: an alias must name the container itself.
    return {"ansible_host": host_name, **dict(inv["all"]["hosts"][host_name])}


def write_inventory(data: dict) -> Path:
    import yaml

    fd, path = tempfile.mkstemp(prefix="taskstack-inv-", suffix=".yml")
    with os.fdopen(fd, "w") as stream:
        yaml.safe_dump(data, stream)
    return Path(path)


def app_python(host, code: str, env_file: str = "/etc/celery/demo.env",
               app_dir: str = "/srv/celery/app", venv: str = "/opt/celery/venv", timeout: int = 120):
    """Run Python in the app's virtualenv on the host, with the app's environment (read from
    its environment file inside the host: no secret on a command line)."""
    script = (
        f"set -a; . {env_file}; set +a; cd {app_dir}; "
        f"timeout {timeout} {venv}/bin/python - <<'PYEOF'\n{code}\nPYEOF"
    )
    return host.run(f"bash -c {shlex.quote(script)}")


def app_json(host, code: str, **kwargs):
    """Run Python that prints one JSON document; return it (fail with the error otherwise)."""
    result = app_python(host, code, **kwargs)
    assert result.rc == 0, f"app code failed (rc={result.rc}):\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def longest_gap(starts: list[float], begin: float, end: float) -> tuple[float, float]:
    """The longest stretch of [begin, end] without a task start, as (from, to) (window edges
    count as starts)."""
    points = [begin, *sorted(s for s in starts if begin <= s <= end), end]
    return max(zip(points, points[1:]), key=lambda gap: gap[1] - gap[0])


def longest_pause(starts: list[float], begin: float, end: float) -> float:
    """Longest time in [begin, end] without a task start (window edges count as starts)."""
    a, b = longest_gap(starts, begin, end)
    return b - a


def state_snapshot(host, paths: list[str], units: list[str]) -> dict:
    """Checksums of config files and the state/PID of units: equal before and after means
    nothing changed on the host."""
    sums = host.run("sha256sum " + " ".join(paths) + " 2>&1").stdout
    show = host.run(
        "systemctl show -p Id,ActiveState,MainPID,ExecMainStartTimestampMonotonic " + " ".join(units)
    ).stdout
    return {"files": sums, "units": show}
