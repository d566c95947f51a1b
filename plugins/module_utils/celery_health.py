# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a Celery app on Redis healthy: its workers, its queues, its broker's persistence.

Pure Python: the collectors take any client with redis-py's `info(section)`, `llen(key)` and
`hlen(key)` (a redis.Redis, or a fake in the unit tests), and evaluate() only compares numbers
with thresholds. Unhealthy is an answer, not an error: evaluate() returns `healthy: false` and
a list of problems, each naming what, its value and the limit it broke.

Where kombu's Redis transport (kombu/transport/redis.py, checked against kombu 5.7) keeps things:
- a queue with priorities is one list per priority step: `<queue>` for step 0 and
  `<queue><sep><step>` for the others (Channel._q_for_pri), with sep `\\x06\\x16` and steps
  [0, 3, 6, 9] (PRIORITY_STEPS); the queue's length is the sum (Channel._size);
- messages delivered and not yet acknowledged are fields of the hash `unacked` (transport
  option unacked_key), indexed by delivery time in the sorted set `unacked_index`;
- the transport option global_keyprefix is put in front of every one of these keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
# Persistence statuses Redis reports as "ok" or "err"; anything but "ok" means writes to disk
# failed and, with the default stop-writes-on-bgsave-error, that Redis refuses writes.
WRITE_STATUSES = ("aof_last_write_status", "aof_last_bgrewrite_status", "rdb_last_bgsave_status")
# The INFO sections the persistence collector reads.
INFO_SECTIONS = ("persistence", "memory")
NODE_FACTS = ("ping", "active", "reserved", "scheduled")


@dataclass(frozen=True)
class KombuKeys:
    """The names of kombu's Redis keys for one transport configuration."""

    prefix: str = ""
    priority_steps: Sequence[int] = PRIORITY_STEPS
    sep: str = PRIORITY_SEP
    unacked_key: str = UNACKED_KEY
    unacked_index_key: str = UNACKED_INDEX_KEY

    def queue_keys(self, queue: str) -> dict[int, str]:
        """{priority step: list key} of a queue, the bare name for step 0, steps in order."""
        keys: dict[int, str] = {}
        for step in sorted(set(self.priority_steps)):
            keys[step] = self.prefix + (queue if step == 0 else "%s%s%d" % (queue, self.sep, step))
        return keys

    def unacked(self) -> str:
        return self.prefix + self.unacked_key

    def unacked_index(self) -> str:
        return self.prefix + self.unacked_index_key


@dataclass(frozen=True)
class Thresholds:
    """Limits; None means not checked. A value above its maximum is a problem."""

    max_queue_depth: Optional[int] = None
    queue_max_depth: Mapping[str, int] = field(default_factory=dict)
    max_unacked: Optional[int] = None
    max_memory_ratio: Optional[float] = 0.9
    max_aof_delayed_fsync: Optional[int] = None
    require_aof: bool = False

    def queue_limit(self, queue: str) -> Optional[int]:
        """The per-queue override, else the default maximum depth."""
        return self.queue_max_depth.get(queue, self.max_queue_depth)


# --------------------------------------------------------------------------------------------
# Collectors: one client call per key or section, nothing interpreted
# --------------------------------------------------------------------------------------------


def as_int(value: Any) -> Optional[int]:
    """An INFO or LLEN value as int: redis-py parses numbers, flat_info() gives text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def sum_lengths(lengths: Iterable[Any]) -> int:
    """The depth of a queue from the LLEN of its priority keys; non-numbers count as 0, as in
    kombu's Channel._size (a pipeline can return an error object in place of a number)."""
    return sum(n for n in (as_int(length) for length in lengths) if n is not None)


def collect_queue(client: Any, queue: str, keys: KombuKeys) -> dict[str, Any]:
    """{depth, by_priority: {step: length}} of one queue."""
    by_priority = {step: as_int(client.llen(key)) or 0 for step, key in keys.queue_keys(queue).items()}
    return {"depth": sum_lengths(by_priority.values()), "by_priority": by_priority}


def collect_queues(client: Any, queues: Iterable[str], keys: KombuKeys) -> dict[str, dict[str, Any]]:
    return {queue: collect_queue(client, queue, keys) for queue in queues}


def collect_unacked(client: Any, keys: KombuKeys) -> int:
    """Messages delivered to a worker and not acknowledged yet (HLEN of the unacked hash), of
    every queue of the database: kombu keeps one hash for all of them."""
    return as_int(client.hlen(keys.unacked())) or 0


def collect_info(client: Any, sections: Sequence[str] = INFO_SECTIONS) -> dict[str, Any]:
    """The fields of the INFO sections, merged; nested values (keyspace lines) left out."""
    merged: dict[str, Any] = {}
    for section in sections:
        merged.update({str(k): v for k, v in client.info(section).items()
                       if not isinstance(v, (dict, list))})
    return merged


def collect_replication(client: Any) -> dict[str, Any]:
    """INFO replication as redis-py parses it, the primary's `slaveN` lines (dicts) kept."""
    return {str(k): v for k, v in client.info("replication").items()}


# --------------------------------------------------------------------------------------------
# Evaluation: facts against thresholds
# --------------------------------------------------------------------------------------------


def replication_health(info: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """This server's place in replication. A primary lists its replicas (address, state, how many
    bytes of the replication stream they have not confirmed, seconds since they last did); a
    replica names its primary and its link. A replica not online, or a replica's link not up, is
    a problem: what it has not received is lost if the primary dies now. A primary without
    replicas is a single server, which is no problem here."""
    role = str(info.get("role", "unknown"))
    if role == "master":
        offset = as_int(info.get("master_repl_offset")) or 0
        replicas = []
        problems = []
        for name, line in sorted(info.items()):
            if not (name.startswith("slave") and name[5:].isdigit() and isinstance(line, Mapping)):
                continue
            replica = {"address": "%s:%s" % (line.get("ip"), line.get("port")),
                       "state": str(line.get("state")),
                       "behind_bytes": max(0, offset - (as_int(line.get("offset")) or 0)),
                       "lag_seconds": as_int(line.get("lag"))}
            replicas.append(replica)
            if replica["state"] != "online":
                problems.append("replica %s is %s (want online)" % (replica["address"], replica["state"]))
        return {"role": "primary", "offset": offset, "replicas": replicas}, problems
    if role == "slave":
        link = str(info.get("master_link_status", "unknown"))
        report = {"role": "replica",
                  "primary": "%s:%s" % (info.get("master_host"), info.get("master_port")),
                  "link": link,
                  "offset": as_int(info.get("slave_repl_offset")),
                  "last_io_seconds": as_int(info.get("master_last_io_seconds_ago"))}
        problems = [] if link == "up" else ["link to the primary %s is %s (want up)" % (report["primary"], link)]
        return report, problems
    return {"role": role}, []


def _count(info: Mapping[str, Any], fact: str) -> Optional[int]:
    value = info.get(fact + "_count")
    return value if isinstance(value, int) else None


def node_health(expected: Sequence[str], inspection: Optional[Mapping[str, Any]]
                ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per expected node: answered ping, and its active/reserved/scheduled counts (None when
    unknown). inspection is celery_control.summarize_inspection() of NODE_FACTS, or None when
    the workers could not be asked; then every node is unknown."""
    replies = (inspection or {}).get("nodes") or {}
    nodes: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for node in expected:
        info = replies.get(node) or {}
        nodes[node] = {
            "ping": info.get("ping") is True,
            "active": _count(info, "active"),
            "reserved": _count(info, "reserved"),
            "scheduled": _count(info, "scheduled"),
        }
        if not nodes[node]["ping"]:
            problems.append("node %s: no answer to ping" % node)
    return nodes, problems


def queue_health(depths: Mapping[str, Mapping[str, Any]], thresholds: Thresholds
                 ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    queues: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for queue, depth in depths.items():
        limit = thresholds.queue_limit(queue)
        queues[queue] = {
            "depth": depth["depth"],
            # Dict keys of a module result are text; the steps become "0", "3", ...
            "by_priority": {str(step): n for step, n in depth["by_priority"].items()},
            "max_depth": limit,
        }
        if limit is not None and depth["depth"] > limit:
            problems.append("queue %s: depth %d > max %d" % (queue, depth["depth"], limit))
    return queues, problems


def unacked_health(count: int, key: str, thresholds: Thresholds
                   ) -> tuple[dict[str, Any], list[str]]:
    problems = []
    if thresholds.max_unacked is not None and count > thresholds.max_unacked:
        problems.append("unacked: %d > max %d" % (count, thresholds.max_unacked))
    return {"count": count, "key": key, "max": thresholds.max_unacked}, problems


def memory_ratio(used: Optional[int], maximum: Optional[int]) -> Optional[float]:
    """used_memory / maxmemory, None when there is no limit (maxmemory 0) or no figure."""
    if used is None or not maximum:
        return None
    return round(used / maximum, 4)


def persistence_health(info: Mapping[str, Any], thresholds: Thresholds
                       ) -> tuple[dict[str, Any], list[str]]:
    """The persistence and memory fields that tell whether Redis keeps what it is given."""
    aof_enabled = as_int(info.get("aof_enabled"))
    used, maximum = as_int(info.get("used_memory")), as_int(info.get("maxmemory"))
    persistence: dict[str, Any] = {
        "aof_enabled": None if aof_enabled is None else aof_enabled == 1,
        # Only in INFO while AOF is on.
        "aof_delayed_fsync": as_int(info.get("aof_delayed_fsync")),
        "used_memory": used,
        "maxmemory": maximum,
        "memory_ratio": memory_ratio(used, maximum),
    }
    problems = []
    for status in WRITE_STATUSES:
        value = info.get(status)
        persistence[status] = None if value is None else str(value)
        if value is not None and str(value) != "ok":
            problems.append("redis %s: %s (want ok)" % (status, value))
    if thresholds.require_aof and persistence["aof_enabled"] is not True:
        problems.append("redis aof_enabled: %s (want 1: AOF required)"
                        % info.get("aof_enabled", "missing"))
    delayed, max_delayed = persistence["aof_delayed_fsync"], thresholds.max_aof_delayed_fsync
    if delayed is not None and max_delayed is not None and delayed > max_delayed:
        problems.append("redis aof_delayed_fsync: %d > max %d" % (delayed, max_delayed))
    ratio, max_ratio = persistence["memory_ratio"], thresholds.max_memory_ratio
    if ratio is not None and max_ratio is not None and ratio > max_ratio:
        problems.append("redis memory: used_memory/maxmemory %.2f > max %.2f (%d of %d bytes)"
                        % (ratio, max_ratio, used, maximum))
    return persistence, problems


def evaluate(queues: Mapping[str, Mapping[str, Any]], unacked: int, info: Mapping[str, Any],
             thresholds: Thresholds, keys: KombuKeys = KombuKeys(),
             expected_nodes: Sequence[str] = (),
             inspection: Optional[Mapping[str, Any]] = None,
             replication: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """{healthy, problems, nodes, queues, unacked, persistence[, replication]} from the facts.

    queues: collect_queues(); unacked: collect_unacked(); info: collect_info();
    expected_nodes and inspection: see node_health (no nodes expected: nothing checked);
    replication: collect_replication() (None: not read, not reported).
    """
    nodes, node_problems = node_health(expected_nodes, inspection)
    queue_report, queue_problems = queue_health(queues, thresholds)
    unacked_report, unacked_problems = unacked_health(unacked, keys.unacked(), thresholds)
    persistence, persistence_problems = persistence_health(info, thresholds)
    problems = node_problems + queue_problems + unacked_problems + persistence_problems
    report = {
        "nodes": nodes,
        "queues": queue_report,
        "unacked": unacked_report,
        "persistence": persistence,
    }
    if replication is not None:
        report["replication"], replication_problems = replication_health(replication)
        problems += replication_problems
    return {"healthy": not problems, "problems": problems, **report}
