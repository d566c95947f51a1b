"""Helpers of the redis scenario: Redis clients on the shared loopback, the scenario's
inventory and credentials, extra playbook runs, and a write-load harness that counts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

PORT = 6379
# A second, deliberately naive Redis in the same container for the negative checks.
NAIVE_PORT = 6409
NAIVE_UNIT = "taskstack-naive-redis"
SCENARIO_DIR = Path(__file__).resolve().parents[1]
PROJECT_DIR = SCENARIO_DIR.parents[1]
CONVERGE = PROJECT_DIR / "molecule" / "shared" / "converge.yml"
PASSWORD_NAMES = ("redis_celery_password", "redis_monitor_password", "redis_admin_password")
# Every ansible-playbook output of this session: test_secrets greps them all.
PLAYBOOK_OUTPUTS: list[str] = []
# Whether the last playbook run that changed the host left it on the scenario's defaults (as
# Molecule's converge does): tests that converge with other values leave it otherwise.
HOST_STATE = {"defaults": True}
# Tests of the role's own logic, the same on every Redis: Debian 12 only, so the suite stays in
# its time budget. What differs between Redis 7 and 8 (the candidate-file checks, the unit's
# writable paths, the AOF transaction replay) runs on both.
DEBIAN12_ONLY = pytest.mark.skipif(os.environ.get("MOLECULE_DISTRO", "debian12") != "debian12",
                                   reason="role logic, the same on every distro: Debian 12 only")


def container_name() -> str:
    return "taskstack-redis-" + os.environ.get("MOLECULE_DISTRO", "debian12")


def inventory() -> str:
    return os.environ["MOLECULE_INVENTORY_FILE"]


def credentials_dir() -> Path:
    return Path(inventory()).parent / "credentials" / container_name()


def password(name: str) -> str:
    return (credentials_dir() / f"{name}.txt").read_text().strip()


def client(user: str | None = "admin", port: int = PORT, **kwargs) -> redis.Redis:
    """A client without retries: a reply is an acknowledgement, an error is not."""
    auth = {}
    if user:
        auth = {"username": user, "password": password(f"redis_{user}_password")}
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=2,
                       retry=Retry(NoBackoff(), 0), decode_responses=True, **auth, **kwargs)


def wait_ready(c: redis.Redis, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if c.ping():
                c.execute_command("GET", "taskstack:probe")  # fails with LOADING while loading
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("Redis did not come back")
        time.sleep(0.1)


def docker_exec(*cmd: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", "-i", container_name(), *cmd], input=stdin, text=True,
                          capture_output=True, check=check)


def sh(script: str, check: bool = True) -> str:
    """Run a shell script in the container, passed on stdin (no secrets ever go through here)."""
    return docker_exec("sh", "-s", stdin=script, check=check).stdout


def main_pid(unit: str = "redis-server") -> int:
    return int(sh(f"systemctl show -p MainPID --value {unit}").strip())


RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class PlaybookRun:
    def __init__(self, proc: subprocess.CompletedProcess, seconds: float) -> None:
        self.rc = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.seconds = seconds
        m = RECAP.search(self.output)
        self.ok, self.changed, self.unreachable, self.failed = (int(g) for g in m.groups()) if m else (0, -1, -1, -1)

    def __repr__(self) -> str:
        return f"<playbook rc={self.rc} changed={self.changed} failed={self.failed} {self.seconds:.0f}s>"

    @property
    def changed_tasks(self) -> list[str]:
        """The names of the tasks that reported a change, in order (what an assertion on
        `changed` should print: the output's tail is only the failure and the profile)."""
        tasks, task = [], "?"
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                task = line[len("TASK ["):].split("]", 1)[0]
            elif line.startswith("changed:"):
                tasks.append(task)
        return tasks


def run_playbook(*args: str, extra_vars: dict | None = None, playbook: Path = CONVERGE) -> PlaybookRun:
    """Run a playbook against the scenario inventory as the converge step does."""
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT_DIR / ".cache" / "collections"))
    cfg = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "ansible.cfg"
    if cfg.exists():
        env["ANSIBLE_CONFIG"] = str(cfg)
    # The inventory directory, as molecule passes it: the groups are in a file beside this one.
    cmd = ["ansible-playbook", "-i", str(Path(inventory()).parent), str(playbook), *args]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True, check=False)
    run = PlaybookRun(proc, time.monotonic() - start)
    PLAYBOOK_OUTPUTS.append(run.output)
    if "--check" not in args and (run.rc == 0 or run.changed != 0):
        HOST_STATE["defaults"] = run.rc == 0 and not extra_vars and playbook == CONVERGE
    assert run.changed >= 0, "the play reached no host:\n" + run.output[-2000:]
    print(f"ansible-playbook {' '.join(args)} {extra_vars or ''}: {run}")
    return run


class Producer:
    """Pushes unique integers with one RPUSH each, remembers which ones Redis acknowledged,
    and keeps retrying through restarts and crashes."""

    def __init__(self, port: int, user: str | None, key: str) -> None:
        self.port, self.user, self.key = port, user, key
        self.acked: list[int] = []
        self.attempted = 0
        self.errors = 0
        self.longest_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        c = client(self.user, self.port)
        last_ack = time.monotonic()
        i = 0
        while not self._stop.is_set():
            i += 1
            self.attempted = i
            try:
                c.rpush(self.key, i)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ResponseError):
                self.errors += 1
                time.sleep(0.02)
                continue
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last_ack)
            last_ack = now
            self.acked.append(i)

    def __enter__(self) -> "Producer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"producer reached only {len(self.acked)} acks"
            time.sleep(0.05)


def missing_items(port: int, user: str | None, key: str, acked: list[int]) -> list[int]:
    c = client(user, port)
    wait_ready(c)
    present = {int(v) for v in c.lrange(key, 0, -1)}
    missing = [i for i in acked if i not in present]
    print(f"{key}: acknowledged={len(acked)} present={len(present)} missing={len(missing)}")
    return missing


def write_with_disruption(port: int, user: str | None, key: str, disrupt, warmup: int = 2000) -> list[int]:
    """Write under load, disrupt the server mid-stream, keep writing until it is back, count."""
    with Producer(port, user, key) as producer:
        producer.wait_for(warmup)
        disrupt()
        producer.wait_for(len(producer.acked) + warmup, timeout=60)
    print(f"{key}: attempted={producer.attempted} errors={producer.errors} "
          f"longest pause between acks={producer.longest_gap:.2f}s")
    return missing_items(port, user, key, producer.acked)


@pytest.fixture(autouse=True)
def host_on_the_defaults() -> None:
    """Every test starts from the scenario's converged defaults, whichever test ran before it:
    converge back only when an earlier test left other values (in file order, none does)."""
    if not HOST_STATE["defaults"]:
        run = run_playbook()
        assert run.rc == 0, run.output[-3000:]
        wait_ready(client("admin"))


def task_results(output: str, task: str) -> list[str]:
    """The text ansible-playbook printed for each run of the task named `task` (up to the next
    task or handler): its status line and, under -v, its result."""
    return [chunk.split("\nTASK [", 1)[0].split("\nRUNNING HANDLER [", 1)[0]
            for chunk in output.split(f" : {task}] ")[1:]]


def failure(run: PlaybookRun) -> tuple[str, str]:
    """The one task that failed the run ("role : name") and the message it failed with."""
    fatal = [line for line in run.output.splitlines() if line.startswith("fatal: [")]
    assert len(fatal) == 1, fatal
    before = run.output.split(fatal[0], 1)[0]
    task = re.findall(r"^TASK \[(.+?)\]", before, re.M)[-1]
    return task, json.loads(fatal[0].split("FAILED! => ", 1)[1])["msg"]


@pytest.fixture(scope="session")
def admin() -> redis.Redis:
    c = client("admin")
    wait_ready(c)
    return c


@pytest.fixture(scope="session")
def naive_redis():
    """Start (and at the end remove) a Redis on NAIVE_PORT from a config file the test rewrites."""
    def start(config: str, user: str | None = None) -> redis.Redis:
        sh(f"systemctl stop {NAIVE_UNIT} 2>/dev/null; systemctl reset-failed {NAIVE_UNIT} 2>/dev/null; "
           "rm -rf /var/lib/taskstack-naive; mkdir -p /var/lib/taskstack-naive /etc/taskstack-naive; true")
        write_naive_config(config)
        sh(f"systemd-run --unit={NAIVE_UNIT} -p Restart=always -p RestartSec=100ms "
           "/usr/bin/redis-server /etc/taskstack-naive/redis.conf")
        c = client(None, NAIVE_PORT, **({"username": user, "password": "x"} if user else {}))
        wait_ready(c)
        return c

    yield start
    sh(f"systemctl stop {NAIVE_UNIT}; rm -rf /var/lib/taskstack-naive /etc/taskstack-naive", check=False)


def write_naive_config(config: str) -> None:
    base = f"port {NAIVE_PORT}\nbind 127.0.0.1\ndir /var/lib/taskstack-naive\nlogfile \"\"\n"
    docker_exec("sh", "-c", "cat > /etc/taskstack-naive/redis.conf", stdin=base + config)


SAMPLER = r'''
import os, time
seen = set()
with open("/root/taskstack-cmdlines.log", "a") as out:
    while True:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if cmdline not in seen:
                seen.add(cmdline)
                out.write(cmdline.replace(b"\0", b" ").decode("utf-8", "replace") + "\n")
                out.flush()
        time.sleep(0.01)
'''


@pytest.fixture(scope="session", autouse=True)
def cmdline_sampler():
    """Record every distinct command line in the container while the tests converge, restart
    and crash Redis; test_secrets searches the record for the passwords."""
    docker_exec("sh", "-c", "cat > /root/taskstack-cmdline-sampler.py; rm -f /root/taskstack-cmdlines.log",
                stdin=SAMPLER)
    sh("systemctl stop taskstack-cmdline-sampler 2>/dev/null; systemctl reset-failed taskstack-cmdline-sampler "
       "2>/dev/null; systemd-run --unit=taskstack-cmdline-sampler python3 /root/taskstack-cmdline-sampler.py")
    yield
    sh("systemctl stop taskstack-cmdline-sampler", check=False)
