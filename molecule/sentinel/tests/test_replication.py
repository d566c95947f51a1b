"""Redis replication with Sentinel (#12): what the redis and sentinel roles set up, and that a run
of the collection after a failover leaves the failover alone.

The primary starts on a (6411), the replicas on b and c (6412, 6413), a sentinel on each host
(26411-26413); every service is on the shared loopback, reached here with redis-py. The last test
fails over with SENTINEL FAILOVER and converges again: nothing changes, the new primary stays.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import redis
import testinfra
from redis.backoff import NoBackoff
from redis.retry import Retry
from stacklib import PROJECT, converge, inventory_dir, wait_for

DISTRO = os.environ.get("MOLECULE_DISTRO", "debian12")
NAMES = {h: f"taskstack-sentinel-{DISTRO}-{h}" for h in "abc"}
DATA_PORTS = {"a": 6411, "b": 6412, "c": 6413}
SENTINEL_PORTS = {"a": 26411, "b": 26412, "c": 26413}
MASTER = "taskstack"
STATE_FILE = "/var/lib/redis/redis-state.conf"
AUTH_FILE = "/etc/redis/replication-auth.conf"
SENTINEL_CONF = "/etc/redis/sentinel-taskstack.conf"
# Exactly the commands of Redis's "Redis Sentinel ACL" documentation.
SENTINEL_COMMANDS = {"multi", "slaveof", "ping", "exec", "subscribe", "config|rewrite", "role", "publish",
                     "info", "client|setname", "client|kill", "script|kill"}


def secret(name: str) -> str:
    """A password of the replicated group's shared credentials directory."""
    return (inventory_dir() / "credentials" / f"redis-{MASTER}" / f"{name}.txt").read_text().strip()


def data(host: str, user: str = "admin") -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=DATA_PORTS[host], username=user,
                       password=secret(f"redis_{user}_password"), socket_timeout=5, socket_connect_timeout=2,
                       retry=Retry(NoBackoff(), 0), decode_responses=True)


def sentinel(host: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=SENTINEL_PORTS[host], password=secret("sentinel_password"),
                       socket_timeout=5, socket_connect_timeout=2, decode_responses=True)


def container(host: str):
    return testinfra.get_host(f"docker://{NAMES[host]}")


def primary_by_sentinels() -> set[str]:
    return {"%s:%s" % tuple(sentinel(h).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER))
            for h in "abc"}


def role_of(host: str) -> str:
    return data(host).execute_command("ROLE")[0]


def answer(call):
    """The reply, or None while the server does not answer (restarting, loading)."""
    try:
        return call()
    except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
        return None


def host_on_port(port: int) -> str:
    return next(h for h, p in DATA_PORTS.items() if p == port)


def changed_tasks(output: str) -> list[str]:
    """The tasks of a playbook run that reported a change, with the hosts that did."""
    found, task = [], "?"
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK ["):].split("]", 1)[0]
        elif line.startswith("changed:"):
            found.append(f"{task}: {line}")
    return found


def current_primary() -> str:
    """The data node every sentinel names (the tests of the failover load may have moved it)."""

    def agreed():
        named = primary_by_sentinels()
        return named if len(named) == 1 else None

    seen = wait_for(agreed, timeout=30, what="the sentinels to name one primary")
    return host_on_port(int(next(iter(seen)).split(":")[1]))


def replicas() -> list[str]:
    return [h for h in "abc" if h != current_primary()]


def test_a_write_on_the_primary_is_read_on_every_replica():
    primary = current_primary()
    key = f"test:replication:{time.time()}"
    data(primary).set(key, "from-primary")
    for host in replicas():
        wait_for(lambda h=host: answer(lambda: data(h).get(key)) == "from-primary", timeout=30,
                 what=f"{key} on {host}")
    with pytest.raises(redis.ReadOnlyError):
        data(replicas()[0]).set(key, "on-a-replica")


def acl_rules(host: str, user: str) -> dict[str, set[str]]:
    """The user's rules as Redis itself lists them (ACL LIST), by kind: commands (+/-), key
    patterns (~, %R~, %W~, allkeys) and channels (&, allchannels)."""
    line = next(entry for entry in data(host).execute_command("ACL", "LIST")
                if entry.split()[1] == user)
    rules = line.split()[2:]
    return {
        "commands": {r for r in rules if r[0] in "+-"},
        "keys": {r for r in rules if r[0] in "~%" or r == "allkeys"},
        "channels": {r for r in rules if r[0] == "&" or r == "allchannels"},
    }


def test_the_replication_user_can_replicate_and_nothing_else():
    primary = current_primary()
    rules = acl_rules(primary, "replication")
    assert rules == {"commands": {"-@all", "+psync", "+replconf", "+ping"}, "keys": set(), "channels": set()}, rules
    as_replication = data(primary, "replication")
    assert as_replication.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_replication.get("any")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_replication.info()
    # The replicas log in to the primary as this user.
    assert {c["user"] for c in data(primary).client_list(_type="replica")} == {"replication"}


def test_the_sentinel_user_has_exactly_the_commands_sentinel_needs():
    primary = current_primary()
    rules = acl_rules(primary, "sentinel")
    assert rules == {"commands": {"-@all"} | {f"+{c}" for c in SENTINEL_COMMANDS}, "keys": set(),
                     "channels": {"&__sentinel__:hello"}}, rules
    as_sentinel = data(primary, "sentinel")
    assert as_sentinel.info("replication")["connected_slaves"] == 2
    for refused in (lambda: as_sentinel.get("any"), lambda: as_sentinel.config_get("masterauth"),
                    lambda: as_sentinel.keys("*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()


def test_the_replication_password_is_in_root_redis_0640_files_and_on_no_command_line():
    password = secret("redis_replication_password")
    for host in "abc":
        node = container(host)
        auth = node.file(AUTH_FILE)
        assert (auth.user, auth.group, auth.mode) == ("root", "redis", 0o640), host
        state = node.file(STATE_FILE)
        assert (state.user, state.group, state.mode) == ("redis", "redis", 0o640), host
        cmdlines = node.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '").stdout
        assert password not in cmdlines, host
        assert password not in node.run("journalctl --no-pager -o cat").stdout, host


def test_every_sentinel_watches_the_primary_with_two_replicas_and_two_other_sentinels():
    primary = current_primary()
    for host in "abc":
        info = sentinel(host).sentinel_master(MASTER)
        assert (info["ip"], info["port"]) == ("127.0.0.1", DATA_PORTS[primary]), (host, info)
        assert info["num-slaves"] == 2 and info["num-other-sentinels"] == 2, (host, info)
        assert info["quorum"] == 2 and info["down-after-milliseconds"] == 2000, (host, info)
    # A client without the password is refused.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=SENTINEL_PORTS["a"], socket_timeout=5).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)


def test_sentinel_runs_as_redis_on_loopback_and_the_package_default_never_started():
    for host in "abc":
        node = container(host)
        pid = node.run("systemctl show -p MainPID --value redis-sentinel").stdout.strip()
        assert node.run(f"ps -o user= -p {pid}").stdout.strip() == "redis", host
        conf = node.file(SENTINEL_CONF)
        assert (conf.user, conf.group, conf.mode) == ("redis", "redis", 0o640), host
        listening = node.run("ss -Hltnp").stdout
        assert f"127.0.0.1:{SENTINEL_PORTS[host]}" in listening, listening
        assert f"0.0.0.0:{SENTINEL_PORTS[host]}" not in listening, listening
    # Debian's package would have started a sentinel on 26379 watching 127.0.0.1:6379.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 26379)) != 0


def test_status_shows_every_sentinels_view_of_the_group():
    primary = current_primary()
    run = converge(playbook=PROJECT / "playbooks" / "status.yml")
    text = " ".join(run.output.split())
    # One line per sentinel host (taskstack.celery.redis_sentinel_info through the status table).
    seen = text.count(f"primary 127.0.0.1:{DATA_PORTS[primary]} (master), 3 sentinels, quorum 2")
    assert seen == 3, run.output[-4000:]
    for host in replicas():
        assert text.count(f"replica 127.0.0.1:{DATA_PORTS[host]} (slave), link ok") == 3, run.output[-4000:]
    assert run.rc == 0, run.output[-4000:]


def test_a_failover_is_left_alone_by_the_next_converge():
    """SENTINEL FAILOVER promotes a replica; a converge afterwards reports no change, keeps the
    new primary, and writes neither sentinel.conf nor a state file."""
    old = primary_by_sentinels()
    assert len(old) == 1, old
    old_host = host_on_port(int(next(iter(old)).split(":")[1]))
    sentinel("b").execute_command("SENTINEL", "FAILOVER", MASTER)

    def agreed_new_primary():
        seen = primary_by_sentinels()
        return seen if len(seen) == 1 and seen != old else None

    new = wait_for(agreed_new_primary, timeout=30, what="the sentinels to agree on a new primary")
    new_host = host_on_port(int(next(iter(new)).split(":")[1]))
    wait_for(lambda: role_of(new_host) == "master" and role_of(old_host) == "slave"
             and data(new_host).info("replication")["connected_slaves"] == 2,
             timeout=30, what=f"{new_host} primary with a and the other node replicating it")
    # What Sentinel recorded (CONFIG REWRITE on the data nodes, its own file on the sentinels).
    wait_for(lambda: "replicaof" not in container(new_host).file(STATE_FILE).content_string,
             timeout=10, what=f"{new_host}'s state file without replicaof")
    files = [SENTINEL_CONF, STATE_FILE, AUTH_FILE, "/etc/redis/redis.conf", "/etc/redis/users.acl"]
    before = {h: container(h).run("sha256sum " + " ".join(files)).stdout for h in "abc"}

    run = converge()
    assert run.rc == 0, run.output[-3000:]
    changed = {h: c for h, c in ((h, v.get("changed", 0)) for h, v in run.recap().items()) if c}
    assert not changed, (changed, changed_tasks(run.output))

    after = {h: container(h).run("sha256sum " + " ".join(files)).stdout for h in "abc"}
    assert after == before
    assert primary_by_sentinels() == new
    assert role_of(new_host) == "master" and role_of(old_host) == "slave"
    key = f"test:after-failover:{time.time()}"
    data(new_host).set(key, "x")
    wait_for(lambda: data(old_host).get(key) == "x", timeout=10, what="the old primary replicating the new one")

    # What Sentinel recorded survives a restart: the old primary comes back as a replica of the
    # new one on its own, at once (Sentinel would convert a node that came back as a second
    # primary only after its next INFO, seconds later).
    assert container(old_host).run("systemctl restart redis-server").rc == 0
    role = wait_for(lambda: answer(lambda: data(old_host).execute_command("ROLE")), timeout=10,
                    what=f"{old_host} to answer after its restart")
    assert role[0] == "slave" and int(role[2]) == DATA_PORTS[new_host], role
