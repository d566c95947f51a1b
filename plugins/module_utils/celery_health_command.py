# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health command of a worker host: one line of JSON on stdout, exit 0 (healthy) or 1.

The celery_worker role copies this file and celery_health.py side by side into a directory of
the host and installs /usr/local/bin/celery-health-<app>, which runs this file with the app's
virtualenv python (it has celery and redis-py) and the path of its configuration:

    {"redis": {host, port, db, tls, tls_ca_file, user, password[, sentinels, master_name,
               sentinel_password]}, "queues": [...],
     "key_prefix": "", "priority_steps": [...], "thresholds": {...}, "pools": [...],
     "fact_file": ..., "env_file": ..., "run_as": "celery", "node_timeout": 1.0}

That file is 0640 root:<celery group>: the monitor user's password is read from it, never
from the command line, and never printed (every secret is masked in the output). The Redis
figures are read as the monitor user (LLEN, HLEN, INFO); the nodes of this host's live colour
(the local fact the deploy switches) are pinged through the broker with the app's own broker
URL (its environment file), by a bare Celery app: the app's code is never imported, so
running this as root (a systemd timer, a load balancer's agent) imports nothing as root.
Run as root, it drops to the Celery user first anyway.

Without Ansible: stdlib, celery_health.py next to it, and (in main only) redis and celery.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any, Iterable, Mapping, Optional

try:  # as a module of the collection (the unit tests)
    from ansible_collections.taskstack.celery.plugins.module_utils import celery_health as health
except ImportError:  # as the installed command: celery_health.py is next to this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import celery_health as health  # type: ignore[no-redef]

MASK = "********"


def read_env_file(text: str) -> dict[str, str]:
    """NAME="value" lines as the celery role writes them (\\\\ and \\" escaped), comments skipped."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        env[name.strip()] = value
    return env


def live_colour(fact_text: Optional[str]) -> str:
    """The live colour from the worker role's local fact, blue before it exists."""
    try:
        colour = str(json.loads(fact_text or "{}").get("live_colour", "blue")).strip()
    except ValueError:
        return "blue"
    return colour if colour in ("blue", "green") else "blue"


def expected_nodes(pools: Iterable[str], colour: str, hostname: str) -> list[str]:
    """The nodenames the units give their workers: <pool>-<colour>@%h (Celery's %h is the
    host's full name, socket.gethostname())."""
    return ["%s-%s@%s" % (pool, colour, hostname) for pool in pools]


def thresholds(config: Mapping[str, Any]) -> health.Thresholds:
    limits = config.get("thresholds") or {}
    return health.Thresholds(
        max_queue_depth=limits.get("max_queue_depth"),
        queue_max_depth={str(k): int(v) for k, v in (limits.get("queue_max_depth") or {}).items()},
        max_unacked=limits.get("max_unacked"),
        max_memory_ratio=limits.get("max_memory_ratio"),
        max_aof_delayed_fsync=limits.get("max_aof_delayed_fsync"),
        require_aof=bool(limits.get("require_aof", False)),
    )


def kombu_keys(config: Mapping[str, Any]) -> health.KombuKeys:
    return health.KombuKeys(prefix=config.get("key_prefix") or "",
                            priority_steps=config.get("priority_steps") or health.PRIORITY_STEPS)


def inspection_from_replies(ping: Mapping[str, Any], counts: Mapping[str, Mapping[str, Any]]
                            ) -> dict[str, Any]:
    """What health.node_health() takes, from Celery's inspect replies: ping {node: {"ok":
    "pong"}}, counts {"active": {node: [tasks]}, "reserved": ..., "scheduled": ...}."""
    nodes: dict[str, dict[str, Any]] = {}
    for node, reply in (ping or {}).items():
        nodes[node] = {"ping": isinstance(reply, dict) and reply.get("ok") == "pong"}
    for fact, replies in counts.items():
        for node, tasks in (replies or {}).items():
            if node in nodes and isinstance(tasks, list):
                nodes[node][fact + "_count"] = len(tasks)
    return {"nodes": nodes}


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def report_line(report: Mapping[str, Any], secrets: Iterable[str]) -> str:
    """One line of JSON, every secret masked (an error message may quote a URL)."""
    return mask(json.dumps(report, sort_keys=True, separators=(",", ":")), secrets)


def failure(message: str, **extra: Any) -> dict[str, Any]:
    return {"healthy": False, "problems": [message], **extra}


# --------------------------------------------------------------------------------------------
# The parts that talk to the host, Redis and the workers (the scenario tests run them)
# --------------------------------------------------------------------------------------------


def drop_privileges(user: str) -> None:
    """Run as the Celery user when started as root (never read the broker as root)."""
    if os.geteuid() != 0 or not user:
        return
    import pwd

    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def transport_options(config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The broker transport options of the bare app that pings the nodes: the key prefix, and
    what the celery role's loader gives the app (TASKSTACK_CELERY_TRANSPORT_OPTIONS: Sentinel's
    master_name and password), which this app, loading no app code and no loader, needs too."""
    options: dict[str, Any] = {}
    if config.get("key_prefix"):
        options["global_keyprefix"] = config["key_prefix"]
    options.update(json.loads(env.get("TASKSTACK_CELERY_TRANSPORT_OPTIONS") or "{}"))
    return options


def primary_address(login: Mapping[str, Any], sentinel_class: Any = None) -> tuple[str, int]:
    """Where the Redis to read is: the configured host and port, or, with sentinels, the
    primary they name now (it moves at a failover)."""
    if not login.get("sentinels"):
        return str(login.get("host", "127.0.0.1")), int(login.get("port", 6379))
    if sentinel_class is None:
        from redis.sentinel import Sentinel as sentinel_class  # type: ignore[no-redef]
    sentinel = sentinel_class([(str(host), int(port)) for host, port in login["sentinels"]],
                              sentinel_kwargs={"password": login.get("sentinel_password") or None,
                                               "socket_timeout": 3},
                              socket_timeout=3)
    host, port = sentinel.discover_master(login["master_name"])
    return str(host), int(port)


def read_redis(config: Mapping[str, Any], keys: health.KombuKeys) -> dict[str, Any]:
    import redis

    login = config["redis"]
    host, port = primary_address(login)
    client = redis.Redis(host=host, port=port,
                         db=int(login.get("db", 0)), username=login.get("user"),
                         password=login.get("password"), ssl=bool(login.get("tls")),
                         ssl_ca_certs=login.get("tls_ca_file") if login.get("tls") else None,
                         socket_timeout=5, socket_connect_timeout=3)
    try:
        return {"queues": health.collect_queues(client, config.get("queues") or [], keys),
                "unacked": health.collect_unacked(client, keys),
                "info": health.collect_info(client)}
    finally:
        client.close()


def ask_nodes(broker_url: str, config: Mapping[str, Any], nodes: list[str],
              options: Mapping[str, Any]) -> dict[str, Any]:
    """Ping the nodes; ask those that answered for their active/reserved/scheduled tasks."""
    from celery import Celery

    app = Celery("taskstack-health", broker=broker_url, set_as_current=False)
    if options:
        app.conf.broker_transport_options = dict(options)
    timeout = float(config.get("node_timeout", 1.0))
    try:
        ping = app.control.inspect(destination=nodes, timeout=timeout).ping() or {}
        alive = [node for node in nodes if node in ping]
        counts: dict[str, Any] = {}
        if alive:
            inspect = app.control.inspect(destination=alive, timeout=timeout)
            for fact in ("active", "reserved", "scheduled"):
                counts[fact] = getattr(inspect, fact)() or {}
        return inspection_from_replies(ping, counts)
    finally:
        app.close()


def run(config_path: str) -> tuple[dict[str, Any], list[str]]:
    """(report, secrets): the report is healthy or names each problem."""
    with open(config_path, encoding="utf-8") as stream:
        config = json.load(stream)
    secrets = [str(config.get("redis", {}).get(name) or "") for name in ("password", "sentinel_password")]
    env: dict[str, str] = {}
    if config.get("env_file"):
        with open(config["env_file"], encoding="utf-8") as stream:
            env = read_env_file(stream.read())
    broker_url = env.get("CELERY_BROKER_URL", "")
    secrets.append(broker_url)
    fact_text = None
    if config.get("fact_file") and os.path.exists(config["fact_file"]):
        with open(config["fact_file"], encoding="utf-8") as stream:
            fact_text = stream.read()
    colour = live_colour(fact_text)
    drop_privileges(config.get("run_as", ""))

    keys = kombu_keys(config)
    limits = thresholds(config)
    nodes = expected_nodes(config.get("pools") or [], colour, socket.gethostname())
    try:
        broker = read_redis(config, keys)
    except Exception as exc:  # redis-py's errors, OSError: an answer, not a traceback
        return failure("cannot read Redis as %s: %s: %s" % (config["redis"].get("user"),
                                                            type(exc).__name__, exc),
                       colour=colour), secrets
    inspection = None
    node_error = None
    if nodes:
        try:
            inspection = ask_nodes(broker_url, config, nodes, transport_options(config, env))
        except Exception as exc:
            node_error = "cannot ask the workers: %s: %s" % (type(exc).__name__, exc)
    report = health.evaluate(broker["queues"], broker["unacked"], broker["info"], limits,
                             keys=keys, expected_nodes=nodes, inspection=inspection)
    if node_error:
        report["problems"].insert(0, node_error)
        report["healthy"] = False
    report["colour"] = colour
    return report, secrets


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    secrets: list[str] = []
    if len(argv) != 1:
        report = failure("usage: celery-health CONFIG.json")
    else:
        try:
            report, secrets = run(argv[0])
        except Exception as exc:
            report = failure("health check failed: %s: %s" % (type(exc).__name__, exc))
    # The one line of the answer; nothing else is written to stdout.
    sys.stdout.write(report_line(report, secrets) + "\n")
    sys.stdout.flush()
    return 0 if report.get("healthy") else 1


if __name__ == "__main__":
    raise SystemExit(main())
