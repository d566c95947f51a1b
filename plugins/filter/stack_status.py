# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The table of playbooks/status.yml, from what the roles' status tasks publish per host.

    {{ __units.stdout | taskstack.celery.systemctl_show_units }}
    {{ hosts | taskstack.celery.stack_status(hostvars) }}

stack_status gives {"lines": [...], "unhealthy": [...]}: one block of lines per host (units and
PIDs, the live colour, nodes, queues and depths, unacked, persistence, problems) and the names
of the hosts with a problem. A host that published nothing (unreachable, a failed task) is
unhealthy.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence


def systemctl_show_units(text: str) -> List[Dict[str, Any]]:
    """`systemctl show --property=Id,LoadState,ActiveState,SubState,MainPID UNIT...` as a list of
    {unit, active, sub, pid}; units systemd does not know (LoadState=not-found) left out."""
    units: List[Dict[str, Any]] = []
    for block in str(text or "").strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if not fields.get("Id") or fields.get("LoadState") == "not-found":
            continue
        pid = fields.get("MainPID", "0")
        units.append({"unit": fields["Id"], "active": fields.get("ActiveState", ""),
                      "sub": fields.get("SubState", ""),
                      "pid": int(pid) if pid.isdigit() and int(pid) > 0 else None})
    return units


def _units_line(units: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join("%s %s%s" % (u["unit"].replace(".service", ""), u["active"],
                                  " pid %s" % u["pid"] if u.get("pid") else "")
                     for u in units) or "none"


def _persistence_line(p: Mapping[str, Any]) -> str:
    ratio = p.get("memory_ratio")
    return ("aof %s write %s, rdb bgsave %s, delayed fsync %s, memory %s"
            % ("on" if p.get("aof_enabled") else "off", p.get("aof_last_write_status"),
               p.get("rdb_last_bgsave_status"), p.get("aof_delayed_fsync"),
               "%d bytes" % p["used_memory"] if ratio is None and p.get("used_memory") is not None
               else "%.0f%% of maxmemory" % (100 * ratio) if ratio is not None else "unknown"))


def _worker_lines(status: Mapping[str, Any]) -> tuple[List[str], List[str]]:
    health = status.get("health") or {}
    units = _units_line(status.get("units") or [])
    lines = ["  workers (live colour %s): %s" % (status.get("colour"), units)]
    for node, n in sorted((health.get("nodes") or {}).items()):
        lines.append("    node %s: %s, active %s reserved %s scheduled %s"
                     % (node, "ping ok" if n.get("ping") else "NO ANSWER", n.get("active"),
                        n.get("reserved"), n.get("scheduled")))
    for queue, q in sorted((health.get("queues") or {}).items()):
        lines.append("    queue %s: depth %s (max %s)" % (queue, q.get("depth"), q.get("max_depth")))
    if "unacked" in health:
        lines.append("    unacked: %s" % (health["unacked"] or {}).get("count"))
    if health.get("persistence"):
        lines.append("    redis: " + _persistence_line(health["persistence"]))
    problems = list(health.get("problems") or [])
    if not health.get("healthy") and not problems:
        problems.append("health command: unhealthy, no reason given")
    return lines, problems


def _replication_lines(r: Mapping[str, Any]) -> List[str]:
    """The primary and each replica's lag, or the replica's primary and link; nothing for a
    primary without replicas (a single server)."""
    if r.get("role") == "primary" and r.get("replicas"):
        return ["    primary, replication offset %s" % r.get("offset")] + [
            "    replica %s %s, %s bytes behind, lag %ss"
            % (x.get("address"), x.get("state"), x.get("behind_bytes"), x.get("lag_seconds"))
            for x in r["replicas"]]
    if r.get("role") == "replica":
        return ["    replica of %s, link %s, offset %s, last io %ss ago"
                % (r.get("primary"), r.get("link"), r.get("offset"), r.get("last_io_seconds"))]
    return []


def _sentinel_lines(status: Mapping[str, Any]) -> tuple[List[str], List[str]]:
    """What this host's sentinel names the primary, and the replicas and quorum it sees."""
    view = status.get("view") or {}
    units = status.get("units") or []
    lines = ["  sentinel: %s" % _units_line(units)]
    if view.get("primary"):
        lines.append("    primary %s (%s), %s sentinels, quorum %s"
                     % (view["primary"].get("address"), view["primary"].get("flags"), view.get("sentinels"),
                        view.get("quorum")))
        lines += ["    replica %s (%s), link %s, offset %s"
                  % (r.get("address"), r.get("flags"), r.get("link"), r.get("offset")) for r in view.get("replicas") or []]
    problems = list(view.get("problems") or [])
    if not view and status.get("error"):
        problems.append(status["error"])
    problems += ["unit %s is %s" % (u["unit"], u["active"]) for u in units if u["active"] != "active"]
    return lines, problems


def _redis_lines(status: Mapping[str, Any]) -> tuple[List[str], List[str]]:
    health = status.get("health") or {}
    units = status.get("units") or []
    lines = ["  redis: %s" % _units_line(units)]
    if health.get("persistence"):
        lines.append("    " + _persistence_line(health["persistence"]))
    lines += _replication_lines(health.get("replication") or {})
    problems = list(health.get("problems") or [])
    problems += ["unit %s is %s" % (u["unit"], u["active"]) for u in units if u["active"] != "active"]
    return lines, problems


def stack_status(hosts: Sequence[str], hostvars: Mapping[str, Any]) -> Dict[str, Any]:
    lines: List[str] = []
    unhealthy: List[str] = []
    for host in hosts:
        facts: Mapping[str, Any] = hostvars.get(host) or {}
        block: List[str] = []
        problems: List[str] = []
        redis: Optional[Mapping[str, Any]] = facts.get("redis_status")
        sentinel: Optional[Mapping[str, Any]] = facts.get("sentinel_status")
        worker: Optional[Mapping[str, Any]] = facts.get("celery_worker_status")
        if redis is None and sentinel is None and worker is None:
            problems.append("no status (unreachable, or a status task failed)")
        for status, describe in ((redis, _redis_lines), (sentinel, _sentinel_lines), (worker, _worker_lines)):
            if status is not None:
                more_lines, more_problems = describe(status)
                block += more_lines
                problems += more_problems
        lines.append("%s: %s" % (host, "UNHEALTHY" if problems else "healthy"))
        lines += block
        lines += ["  PROBLEM: " + problem for problem in problems]
        if problems:
            unhealthy.append(host)
    return {"lines": lines, "unhealthy": unhealthy}


class FilterModule:
    """The status playbook's table."""

    def filters(self) -> Dict[str, Any]:
        return {"systemctl_show_units": systemctl_show_units, "stack_status": stack_status}
