"""A real Redis broker and a real Celery worker for the control plugins' live tests.

Redis listens on 127.0.0.1:6391 (not 6379, so it never meets a Redis of the machine or of a
Molecule scenario), with an ACL user whose password must be URL-encoded in the broker URL. The
worker runs the demo app under a unique nodename. Every wait is bounded; everything started is
stopped at the end. Without redis-server on PATH the tests fail when CI=true (a CI run that
skipped them would pass while testing nothing) and elsewhere skip, saying why in the header and
the summary of the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

_CHECKOUT = Path(__file__).resolve().parents[2]
_ROOT = Path(tempfile.mkdtemp(prefix="taskstack-integration-"))
(_ROOT / "ansible_collections" / "taskstack").mkdir(parents=True)
(_ROOT / "ansible_collections" / "taskstack" / "celery").symlink_to(_CHECKOUT)
sys.path.insert(0, str(_ROOT))
if "ansible_collections" in sys.modules:
    sys.modules["ansible_collections"].__path__.insert(0, str(_ROOT / "ansible_collections"))

COLLECTIONS_ROOT = _ROOT
REDIS_PORT = 6391
REDIS_PASSWORD = "p#ss w'rd$"  # '#', space, quote and '$' all need care in an EnvironmentFile
REDIS_PASSWORD_IN_URL = "p%23ss%20w%27rd%24"
QUEUES = ["it_a", "it_b"]

DEMO_APP = '''
import os
import time

from celery import Celery

# The EnvironmentFile's quoting is part of what is tested: a wrong parse fails the import.
assert os.environ["DEMO_GREETING"] == "hello # not a comment", os.environ["DEMO_GREETING"]

app = Celery("demoapp")
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
app.conf.broker_connection_retry_on_startup = True


@app.task
def sleep_for(seconds):
    time.sleep(seconds)
    return seconds
'''

ENV_FILE = '''# written like /etc/celery/<app>.env, mode 0640 root:celery
CELERY_BROKER_URL="redis://celery:%s@127.0.0.1:%d/0"
; a second comment style
DEMO_GREETING='hello # not a comment'
''' % (REDIS_PASSWORD_IN_URL, REDIS_PORT)


REDIS_SERVER = shutil.which("redis-server")
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
NO_REDIS = ("redis-server is not on PATH; install it (Debian: apt-get install -y redis-server, "
            "or scripts/testbed/host_packages.sh) to run the live tests")


def pytest_report_header(config):
    if not REDIS_SERVER:
        return "live tests: %s %s" % ("FAIL:" if IN_CI else "SKIPPED:", NO_REDIS)
    return "live tests: %s" % REDIS_SERVER


def pytest_terminal_summary(terminalreporter):
    if not REDIS_SERVER and not IN_CI:
        terminalreporter.write_sep("=", "live tests SKIPPED: " + NO_REDIS, yellow=True)


@pytest.fixture(scope="session")
def require_redis_server() -> str:
    """Path of redis-server. Missing: an error under CI=true, a skip with the reason elsewhere."""
    if not REDIS_SERVER:
        if IN_CI:
            pytest.fail("CI=true and " + NO_REDIS, pytrace=False)
        pytest.skip(NO_REDIS)
    return REDIS_SERVER


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("gave up after %.0f s waiting for %s" % (timeout, what))


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_broker(tmp_path_factory, require_redis_server) -> Iterator[str]:
    """Broker URL of a throw-away Redis on 127.0.0.1:6391 with an ACL user."""
    server = require_redis_server
    if _port_open(REDIS_PORT):
        pytest.fail("127.0.0.1:%d is already in use; these tests need it for their own Redis"
                    % REDIS_PORT)
    workdir = tmp_path_factory.mktemp("redis")
    conf = workdir / "redis.conf"
    conf.write_text(
        "bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly no\n"
        "user default off\nuser celery on \">%s\" ~* &* +@all\n"
        % (REDIS_PORT, workdir, REDIS_PASSWORD))
    log = open(workdir / "redis.log", "wb")
    proc = subprocess.Popen([server, str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is not None or _port_open(REDIS_PORT), 15, "redis-server")
        if proc.poll() is not None:
            pytest.fail("redis-server exited: %s" % (workdir / "redis.log").read_text()[-2000:])
        yield "redis://celery:%s@127.0.0.1:%d/0" % (REDIS_PASSWORD_IN_URL, REDIS_PORT)
    finally:
        _stop(proc, grace=10)
        log.close()


@pytest.fixture(scope="session")
def celery_app(tmp_path_factory, redis_broker) -> dict:
    """The demo app's directory and EnvironmentFile, as the helper options take them."""
    pytest.importorskip("celery", reason="celery is not installed in this interpreter")
    base = tmp_path_factory.mktemp("app")
    app_dir = base / "current"
    app_dir.mkdir()
    (app_dir / "demoapp.py").write_text(DEMO_APP)
    env_file = base / "demoapp.env"
    env_file.write_text(ENV_FILE)
    env_file.chmod(0o640)
    return {"app": "demoapp", "app_dir": str(app_dir), "venv": sys.prefix,
            "environment_file": str(env_file)}


@pytest.fixture
def worker(celery_app, redis_broker, tmp_path) -> Iterator[str]:
    """A running worker of the demo app consuming QUEUES; yields its exact nodename."""
    from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
        HelperTarget,
    )
    from ansible_collections.taskstack.celery.plugins.module_utils.celery_environment import (
        helper_process_environment,
        read_environment_file,
    )

    import redis

    redis.Redis.from_url(redis_broker).flushdb()  # nothing left over from an earlier test
    node = "it-%s@integration" % uuid.uuid4().hex[:8]
    env = helper_process_environment(celery_app["app_dir"],
                                     read_environment_file(celery_app["environment_file"]))
    env["PATH"] = os.environ.get("PATH", env["PATH"])
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "demoapp", "worker", "-n", node,
         "-Q", ",".join(QUEUES), "-c", "2", "-l", "INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=celery_app["app_dir"], env=env, stdout=log, stderr=subprocess.STDOUT)
    target = HelperTarget.from_params(dict(celery_app, environment={}, run_as=None))

    def answers_ping():
        if proc.poll() is not None:
            raise AssertionError("worker exited: %s" % log_path.read_text()[-3000:])
        return target.inspect([node], ["ping"], 1.0)["nodes"][node]["ping"]

    try:
        wait_for(answers_ping, 45, "worker %s to answer ping" % node, interval=0.5)
        yield node
    finally:
        _stop(proc, grace=30)
        log.close()


@pytest.fixture(scope="session")
def live():
    """The constants and helpers the live tests share (test modules do not import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(collections_root=COLLECTIONS_ROOT, queues=list(QUEUES),
                           secrets=(REDIS_PASSWORD, REDIS_PASSWORD_IN_URL), wait_for=wait_for)
