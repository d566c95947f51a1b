"""The whole stack from taskstack.celery.site on one bare host: it works, it is locked down, and
changing it never kills a running task.

Counts are printed (pytest -s); the restart tests each come with the naive variant they guard
against, kept in the suite to show the harness sees the loss.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
import uuid

import pytest
from stacklib import (
    app_json,
    connection_vars,
    converge,
    converge_in_background,
    credential,
    state_snapshot,
    wait_for,
    write_inventory,
)

APP_UNITS = [
    "celery-demo-worker@default-blue.service",
    "celery-demo-worker@slow-blue.service",
    "celery-demo-beat.service",
    "celery-demo-flower.service",
]
CONFIG_FILES = [
    "/etc/celery/demo.env",
    "/etc/celery/demo-flower.env",
    "/etc/systemd/system/celery-demo-worker@.service",
    "/etc/systemd/system/celery-demo-worker@default-blue.service.d/pool.conf",
    "/etc/systemd/system/celery-demo-worker@slow-blue.service.d/pool.conf",
    "/etc/systemd/system/celery-demo-beat.service",
    "/etc/systemd/system/celery-demo-flower.service",
    "/etc/redis/redis.conf",
]
# molecule.yml sets flower_url_prefix: flower, as behind a reverse proxy.
FLOWER_ROOT = "http://127.0.0.1:5555"
FLOWER = f"{FLOWER_ROOT}/flower"


# Whether the host runs the scenario's converged configuration: the concurrency tests below
# converge with other values and leave them.
HOST_STATE = {"defaults": True}


@pytest.fixture(scope="module")
def host_name(host):
    return host.backend.host


@pytest.fixture
def stack_on_the_defaults():
    """The scenario's configuration, whichever test ran before: converge back only when a test
    left other values (in file order none has yet)."""
    if not HOST_STATE["defaults"]:
        run = converge()
        assert run.rc == 0, run.output[-3000:]
        HOST_STATE["defaults"] = True


def inspect(host, what: str, node: str | None = None) -> dict:
    dest = f"destination=[{node!r}], " if node else ""
    return app_json(host, f"""
import json
from demo.app import app
print(json.dumps(app.control.inspect({dest}timeout=3).{what}() or {{}}))
""")


def answered_by_all(replies: dict, names) -> dict | None:
    """The replies, once every node named has answered (None before: keep waiting)."""
    return replies if set(names) <= set(replies) else None


def nodes(host_name: str) -> dict[str, str]:
    return {pool: f"{pool}-blue@{host_name}" for pool in ("default", "slow")}


# --- it works ---------------------------------------------------------------------------

def test_task_sent_by_a_client_runs_and_its_result_is_read_back(host):
    result = app_json(host, """
import json
from demo.tasks import add
print(json.dumps(add.delay(2, 40).get(timeout=30)))
""")
    assert result == 42


def test_result_backend_is_a_separate_database_from_the_broker(host):
    urls = app_json(host, """
import json, os
print(json.dumps([os.environ["CELERY_BROKER_URL"].rsplit("/", 1)[1],
                  os.environ["CELERY_RESULT_BACKEND"].rsplit("/", 1)[1]]))
""")
    assert urls == ["0", "1"]


def test_beat_fires_the_periodic_task(host):
    count = """
import json
from demo.tasks import ledger
print(json.dumps(ledger().llen("demo:ticks")))
"""
    before = app_json(host, count)
    time.sleep(6)
    after = app_json(host, count)
    print(f"beat ticks: {before} -> {after} in 6 s (schedule: every 2 s)")
    assert after - before >= 2


def test_each_pool_consumes_only_its_own_queues(host, host_name):
    n = nodes(host_name)
    queues = wait_for(lambda: answered_by_all(inspect(host, "active_queues"), n.values()),
                      30, what="both pools to answer")
    assert sorted(queues) == sorted(n.values()), f"nodes answering: {sorted(queues)}"
    assert [q["name"] for q in queues[n["default"]]] == ["celery"]
    assert [q["name"] for q in queues[n["slow"]]] == ["slow"]


@pytest.mark.usefixtures("stack_on_the_defaults")
def test_each_pool_runs_with_its_own_concurrency(host, host_name):
    n = nodes(host_name)
    stats = wait_for(lambda: answered_by_all(inspect(host, "stats"), n.values()),
                     30, what="both pools to answer")
    assert stats[n["default"]]["pool"]["max-concurrency"] == 2
    assert stats[n["slow"]]["pool"]["max-concurrency"] == 1


def test_worker_units_stop_warm_and_wait_past_the_time_limit(host):
    for unit in APP_UNITS[:2]:
        show = dict(
            line.split("=", 1)
            for line in host.run(f"systemctl show -p KillMode -p TimeoutStopUSec -p Type {unit}").stdout.split()
        )
        assert show["KillMode"] == "mixed", unit
        assert show["Type"] == "simple", unit
        # systemd prints e.g. "6min"; 300 s hard time limit + 60 s margin.
        assert show["TimeoutStopUSec"] == "6min", unit


# --- Flower ------------------------------------------------------------------------------

def flower_get(path: str, auth: tuple[str, str] | None = None, base: str = FLOWER) -> tuple[int, bytes]:
    request = urllib.request.Request(base + path)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""
    except urllib.error.URLError:
        return 0, b""


def assert_flower_requires_auth(base: str, auth: tuple[str, str], worker: str) -> None:
    """The check: no credentials -> 401, credentials -> 200 listing the worker."""
    status, _body = flower_get("/api/workers", base=base)
    assert status == 401, f"{base}/api/workers answered {status} without credentials"
    status, body = flower_get("/api/workers?refresh=1", auth=auth, base=base)
    assert status == 200
    assert worker in json.loads(body)


def test_flower_requires_authentication_and_lists_the_workers(host_name):
    password = credential(host_name, "flower_admin_password")
    wait_for(lambda: flower_get("/healthcheck")[0] in (200, 401), 30, what="Flower to answer")
    assert_flower_requires_auth(FLOWER, ("admin", password), nodes(host_name)["default"])


def test_flower_answers_under_its_url_prefix_only(host_name):
    """Behind a proxy that forwards /flower/, the bare paths are not Flower's: 404, even with
    credentials, and the prefixed API is the one that lists the worker."""
    auth = ("admin", credential(host_name, "flower_admin_password"))
    wait_for(lambda: flower_get("/healthcheck")[0] in (200, 401), 30, what="Flower to answer")
    for path in ("/api/workers", "/healthcheck", "/"):
        status, _body = flower_get(path, auth=auth, base=FLOWER_ROOT)
        assert status == 404, f"{FLOWER_ROOT}{path} answered {status}: the prefix is not applied"
    status, body = flower_get("/api/workers", auth=auth)
    assert status == 200
    assert nodes(host_name)["default"] in json.loads(body)


def test_flower_check_fails_against_an_unauthenticated_api(host, host_name):
    """Negative check: the same check against a Flower started the insecure way, without basic
    auth and with FLOWER_UNAUTHENTICATED_API=true (which Flower honours only when no auth is set)."""
    password = credential(host_name, "flower_admin_password")
    cleanup = "systemctl stop flower-unauthenticated.service; systemctl reset-failed flower-unauthenticated.service"
    host.run(cleanup)
    started = host.run(
        "systemd-run --unit flower-unauthenticated -p User=flower -p SupplementaryGroups=celery"
        " -p EnvironmentFile=/etc/celery/demo.env"
        " -E FLOWER_UNAUTHENTICATED_API=true -p WorkingDirectory=/srv/celery/app"
        " /opt/celery/venv/bin/celery --app=demo.app flower --port=5556"
    )
    assert started.rc == 0, started.stderr
    try:
        base = "http://127.0.0.1:5556"
        wait_for(lambda: flower_get("/healthcheck", base=base)[0] in (200, 401), 30, what="the unauthenticated Flower")
        with pytest.raises(AssertionError, match="without credentials"):
            assert_flower_requires_auth(base, ("admin", password), nodes(host_name)["default"])
    finally:
        host.run(cleanup)


def test_flower_listens_on_loopback_only(host):
    listeners = host.run("ss -Htlnp 'sport = :5555'").stdout.split("\n")
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listeners if line.strip()}
    assert addresses == {"127.0.0.1"}


# --- least privilege and secrets ---------------------------------------------------------

def test_the_package_never_ran_redis_on_debians_default_configuration(host):
    """Debian's package starts redis-server as it installs, with no password on port 6379; the
    role's drop-in keeps it stopped until the role's configuration is in place. Debian's own
    configuration logs to /var/log/redis, the role's to the journal: both are read."""
    journal = host.run("journalctl -u redis-server --no-pager -o cat").stdout
    # systemd 252: "... was skipped because of an unmet condition check (ConditionPathExists=...)";
    # systemd 257: "... skipped, unmet condition check ConditionPathExists=...".
    assert re.search(r"unmet condition check \(?ConditionPathExists=/etc/redis/users\.acl", journal), journal
    assert "port=6380" in journal
    assert "port=6379" not in journal, "the package started Redis on Debian's default configuration"
    default_log = host.run("cat /var/log/redis/redis-server.log 2>/dev/null").stdout
    assert "port=6379" not in default_log, "the package started Redis on Debian's default configuration"


def test_services_run_as_their_own_unprivileged_users(host):
    users = {}
    for unit in APP_UNITS:
        pid = host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip()
        users[unit] = host.run(f"ps -o user= -p {pid}").stdout.strip()
    assert users == {
        APP_UNITS[0]: "celery",
        APP_UNITS[1]: "celery",
        APP_UNITS[2]: "celery",
        APP_UNITS[3]: "flower",
    }


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/etc/celery/demo.env", "root", "celery", 0o640),
        ("/etc/celery/demo-flower.env", "root", "flower", 0o640),
        ("/etc/celery", "root", "celery", 0o750),
        ("/opt/celery/venv/bin/celery", "root", "root", 0o755),
    ],
)
def test_secret_and_code_files_are_not_writable_or_readable_by_others(host, path, owner, group, mode):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == (owner, group, mode)


def test_units_are_sandboxed_per_systemd_analyze_security(host):
    """systemd's own exposure score (0 = fully sandboxed, 10 = not at all) of every unit the
    stack runs; README quotes these figures."""
    exposure = {}
    for unit in [*APP_UNITS, "redis-server.service"]:
        out = host.run(f"systemd-analyze security --no-pager {unit}").stdout
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", out)
        assert match, f"no exposure level for {unit}:\n{out[-500:]}"
        exposure[unit] = (float(match.group(1)), match.group(2))
    print(f"systemd-analyze security exposure: {exposure}")
    assert all(level <= 2.0 for level, _detail in exposure.values()), exposure


def test_generated_secrets_are_private_on_the_controller(host_name):
    from stacklib import inventory_dir

    for name in ("redis_celery_password", "flower_admin_password"):
        path = inventory_dir() / "credentials" / host_name / f"{name}.txt"
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


def test_a_directory_inventory_holding_the_generated_secrets_parses_to_the_same_hosts(host_name):
    """Users pass `-i inventory/`: the password files under it must not become inventory."""
    import subprocess

    from stacklib import inventory_dir

    assert list((inventory_dir() / "credentials" / host_name).glob("*.txt")), "no generated secrets"
    proc = subprocess.run(["ansible-inventory", "-i", str(inventory_dir()), "--list"],
                          capture_output=True, text=True, check=True)
    groups = json.loads(proc.stdout)
    hosts = {h for name, group in groups.items() if name != "_meta" for h in group.get("hosts", [])}
    assert hosts == {host_name}, f"inventory hosts: {sorted(hosts)}\n{proc.stderr}"
    for secret in secrets(host_name).values():
        assert secret not in proc.stdout + proc.stderr


def secrets(host_name: str) -> dict[str, str]:
    names = ("redis_celery_password", "redis_admin_password", "redis_monitor_password", "flower_admin_password")
    return {name: credential(host_name, name) for name in names}


def places_secrets_could_leak(host, playbook_output: str) -> dict[str, str]:
    """The text of every place a secret must never appear: the playbook's output, the host's
    journal and the command lines of every process running on it."""
    return {
        "playbook output": playbook_output,
        "journal": host.run("journalctl --no-pager -o cat").stdout,
        "command lines": host.run(
            r"for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < $f 2>/dev/null; echo; done").stdout,
    }


def secret_hits(secret_values: dict[str, str], places: dict[str, str]) -> dict[str, list[str]]:
    """For each secret, the places whose text holds it (empty lists: no leak)."""
    return {name: [where for where, text in places.items() if value in text]
            for name, value in secret_values.items()}


LEAKY_PLAYBOOK = """---
- name: Print a value as a task without no_log does
  hosts: all
  gather_facts: false
  tasks:
    - name: Echo the canary
      ansible.builtin.command: echo leaked {{ canary }}
      changed_when: false
"""


def test_secret_scan_finds_a_deliberately_leaked_sample(host, tmp_path):
    """Negative check: a random canary leaked the ways a secret would be, through the same
    ansible-playbook runner (-vvv) as the converge scanned below and a running process's argv,
    must be reported in all three places: the run's output, the journal (the module logs its
    arguments there) and the command lines."""
    canary = f"canary{uuid.uuid4().hex}"
    unit = "taskstack-secret-canary"
    playbook = tmp_path / "leak.yml"
    playbook.write_text(LEAKY_PLAYBOOK)
    host.run(f"systemctl stop {unit}; systemctl reset-failed {unit}")
    started = host.run(f"systemd-run --unit {unit} /bin/sh -c 'sleep 60' {canary}")
    assert started.rc == 0, started.stderr
    try:
        run = converge("-vvv", extra_vars={"canary": canary}, playbook=playbook)
        assert run.rc == 0, run.output[-3000:]

        def reported_everywhere():
            hits = secret_hits({"canary": canary}, places_secrets_could_leak(host, run.output))
            return hits if len(hits["canary"]) == 3 else None

        try:
            hits = wait_for(reported_everywhere, 10, what="the scan to report the canary in all three places")
        except AssertionError:
            hits = secret_hits({"canary": canary}, places_secrets_could_leak(host, run.output))
            raise AssertionError(f"the scan found the canary only in {hits['canary']}") from None
        print(f"canary hits: {hits}")
    finally:
        host.run(f"systemctl stop {unit}; systemctl reset-failed {unit}")


def task_statuses(output: str, task: str) -> list[str]:
    """The status (ok, changed, skipping, ...) a playbook run printed for each run of a task,
    by its name (site.yml's preflight play skips the same tasks once before they run)."""
    return [match.group(1) if match else "?"
            for match in (re.search(r"^(ok|changed|skipping|fatal|failed)\b", after, re.M)
                          for after in output.split(f": {task}]")[1:])]


def test_no_secret_in_diff_or_verbose_output_journal_or_command_lines(host, host_name):
    # A rerun that rewrites nothing prints no diff: stale files make it rewrite both
    # secret-bearing environment files, as the first run does (the services then restart).
    for path in ("/etc/celery/demo.env", "/etc/celery/demo-flower.env"):
        assert host.run(f"echo '# edited by hand' >> {path}").rc == 0
    run = converge("--diff", "-vvv")
    assert run.rc == 0, run.output[-3000:]
    for task in ("Write the app's environment file", "Write Flower's environment file"):
        statuses = task_statuses(run.output, task)
        assert "changed" in statuses, f"{task!r} did not rewrite its file: {statuses}"
    places = places_secrets_could_leak(host, run.output)
    hits = secret_hits(secrets(host_name), places)
    print(f"secret hits: {hits} (output {len(places['playbook output'])} chars,"
          f" journal {len(places['journal'])} chars)")
    assert all(not where for where in hits.values()), hits


# --- bad input: clear error before anything changes --------------------------------------

@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"celery_app": "demo.nonexistent"}, "cannot be loaded"),
        ({"celery_app": ""}, "celery_app must be the value of `celery -A`"),
        ({"celery_worker_time_limit": 4000}, "visibility_timeout"),
        # The app's own task limit, read from the loaded app (tests/demo_app/demo/long_limits.py).
        ({"celery_app": "demo.long_limits"}, "Task 'demo.long_limits.export' has its own time_limit of 4000 s"),
        ({"celery_worker_concurrency": 0}, "Concurrency of pool"),
        ({"flower_address": "0.0.0.0"}, "flower_allow_remote"),
        ({"flower_url_prefix": "flower 100%"}, "flower_url_prefix is 'flower 100%'"),
    ],
    ids=["unimportable-app", "missing-app", "time-limit-above-visibility-timeout",
         "task-time-limit-above-visibility-timeout", "zero-concurrency",
         "flower-on-all-addresses", "url-prefix-with-space-and-percent"],
)
def test_bad_input_fails_with_a_clear_message_and_changes_nothing(host, extra_vars, message):
    before = state_snapshot(host, CONFIG_FILES, APP_UNITS)
    run = converge(extra_vars=extra_vars)
    after = state_snapshot(host, CONFIG_FILES, APP_UNITS)
    assert run.rc != 0
    assert message in run.output, run.output[-2000:]
    assert run.changed() == 0, run.recap()
    assert after == before


def test_two_beat_hosts_are_refused_before_anything_changes(host, host_name):
    # A second inventory name for the same container, in celery_beat.
    # It reaches the broker on loopback as the first does, so only the beat check can fail.
    second = {**connection_vars(host_name), "celery_redis_address": "127.0.0.1"}
    extra = write_inventory({"celery_beat": {"hosts": {"second-beat": second}}})
    before = state_snapshot(host, CONFIG_FILES, APP_UNITS)
    run = converge(inventories=[extra])
    assert run.rc != 0
    assert "The celery_beat group holds 2 hosts" in run.output, run.output[-2000:]
    assert run.changed() == 0, run.recap()
    assert state_snapshot(host, CONFIG_FILES, APP_UNITS) == before


# --- changing concurrency under load -----------------------------------------------------

def unit_times(host, unit: str) -> dict[str, float]:
    """When the unit last began to stop (ActiveExit) and finished stopping (InactiveEnter)."""
    out = host.run(
        f"systemctl show --timestamp=unix -p ActiveExitTimestamp -p InactiveEnterTimestamp {unit}"
    ).stdout
    return {k: float(v.lstrip("@") or 0) for k, v in (line.split("=", 1) for line in out.split())}


def run_task_across(host, extra_vars: dict) -> dict:
    """The harness: a task is running when the re-converge with `extra_vars` restarts its pool.

    The task (demo.tasks.hold) runs until released. Once the worker's stop has begun, it is kept
    running 3 s more, then released. Returns how often it started and finished, whether the stop
    began while it ran, and whether the stop waited for it to finish."""
    unit = "celery-demo-worker@default-blue.service"
    job = uuid.uuid4().hex
    app_json(host, f"""
import json
from demo.tasks import hold
print(json.dumps(hold.apply_async(({job!r}, 300), queue="celery").id))
""")
    ledger = f"""
import json
from demo.tasks import ledger
db = ledger()
print(json.dumps([[float(s.split()[0]) for s in db.lrange(key, 0, -1)]
                  for key in ("demo:started:{job}", "demo:finished:{job}")]))
"""
    wait_for(lambda: app_json(host, ledger)[0], 30, what="the task to start")
    stop_before = unit_times(host, unit)["ActiveExitTimestamp"]
    playbook = converge_in_background(extra_vars=extra_vars)
    try:
        wait_for(lambda: unit_times(host, unit)["ActiveExitTimestamp"] != stop_before
                 or playbook.poll() is not None, 600, interval=0.3, what="the worker's stop to begin")
        time.sleep(3)
    finally:
        app_json(host, f"""
import json
from demo.tasks import ledger
print(json.dumps(ledger().set("demo:release:{job}", 1)))
""")
        output = playbook.communicate(timeout=600)[0]
        HOST_STATE["defaults"] = False
    assert playbook.returncode == 0, output[-3000:]
    # A killed task is redelivered and runs again: wait for a finish, then for the dust.
    wait_for(lambda: app_json(host, ledger)[1], 60, what="the task to finish")
    time.sleep(3)
    starts, finishes = app_json(host, ledger)
    stop = unit_times(host, unit)
    return {
        "started": len(starts),
        "finished": len(finishes),
        "stop_began_while_running": starts[0] < stop["ActiveExitTimestamp"] < finishes[-1],
        "stop_waited_for_the_task": stop["InactiveEnterTimestamp"] >= finishes[0],
    }


def test_changing_concurrency_restarts_warm_and_the_running_task_completes_once(host, host_name):
    slow_pid = host.run("systemctl show -p MainPID --value celery-demo-worker@slow-blue.service").stdout
    counts = run_task_across(host, {"celery_worker_concurrency": 3})
    print(f"long task across the concurrency change: {counts}")
    assert counts == {"started": 1, "finished": 1, "stop_began_while_running": True,
                      "stop_waited_for_the_task": True}
    node = nodes(host_name)["default"]
    stats = wait_for(lambda: inspect(host, "stats", node), 30, what=f"{node} to answer")
    assert stats[nodes(host_name)["default"]]["pool"]["max-concurrency"] == 3
    # The slow pool sets its own concurrency: it was not restarted.
    assert host.run("systemctl show -p MainPID --value celery-demo-worker@slow-blue.service").stdout == slow_pid


def test_naive_unit_with_default_killmode_loses_or_repeats_the_task(host):
    """Negative check: the same change against systemd's default KillMode=control-group."""
    dropin = "/etc/systemd/system/celery-demo-worker@.service.d/zz-naive-killmode.conf"
    host.run(f"printf '[Service]\\nKillMode=control-group\\n' > {dropin} && systemctl daemon-reload")
    try:
        counts = run_task_across(host, {"celery_worker_concurrency": 4})
        print(f"long task across the same change with KillMode=control-group: {counts}")
        assert counts["stop_began_while_running"], "the restart missed the task: proves nothing"
        assert (counts["started"], counts["finished"]) != (1, 1), "the harness did not see the killed task"
    finally:
        host.run(f"rm -f {dropin} && systemctl daemon-reload")
