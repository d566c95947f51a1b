# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find what a hand-made Celery stack left on a host, and say what adopting it will do.

The stack the collection takes over was set up by hand (a runbook): a `celery-<app>.service`
worker, perhaps with an embedded beat (`-B`), a root `flower.service` on the Flower port, a Redis
without a password. This file reads what systemd, ps and ss print and decides, without touching
anything:

- which units run `celery ... worker|beat|flower` (or `flower`) for the same app, and the
  nodename each worker answers to (what the drain must name exactly);
- which processes hold a port the collection's services will listen on, and the unit they
  belong to (from /proc/<pid>/cgroup);
- what CLIENT LIST says about clients still connected without credentials;
- the plan: one line per finding, saying what the run will do with it.

Everything here is pure text in, data out; plugins/modules/celery_adopt_facts.py runs the
commands. Passwords in URLs found on command lines are masked before they leave this file.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

# What `systemctl show` is asked for, for each unit (in this order on the command line).
SHOW_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "UnitFileState", "FragmentPath",
                   "DropInPaths", "MainPID", "User", "ExecStart", "WorkingDirectory", "EnvironmentFiles")
# Properties systemctl show prints once per value (one command, one file): kept one per line.
_REPEATED_PROPERTIES = ("ExecStart", "EnvironmentFiles")
# Celery's global options that take a value (celery 5: before the subcommand; celery 4 took
# them after it too, so both places are read).
_GLOBAL_VALUE_OPTIONS = {"-A": "app", "--app": "app", "-b": "broker", "--broker": "broker",
                         "--result-backend": "result_backend", "--loader": None, "--config": None,
                         "--workdir": "workdir"}
_SUBCOMMANDS = ("worker", "beat", "flower")
_WORKER_VALUE_OPTIONS = {"-n": "hostname", "--hostname": "hostname", "-c": "concurrency",
                         "--concurrency": "concurrency", "-Q": "queues", "--queues": "queues"}
_URL_PASSWORD = re.compile(r"(?P<head>[a-z+]+://[^:/@\s]*:)[^@\s]+(?P<at>@)")


class AdoptError(ValueError):
    """Text that cannot be read the way this file expects (a systemd or ss we do not know)."""


def mask_url_passwords(text: str) -> str:
    """redis://user:secret@host -> redis://user:********@host, anywhere in the text."""
    return _URL_PASSWORD.sub(r"\g<head>********\g<at>", text)


# --------------------------------------------------------------------------------------------
# systemctl show
# --------------------------------------------------------------------------------------------


def parse_systemctl_show(text: str) -> list[dict[str, str]]:
    """`systemctl show -p A,B,... unit1 unit2 ...`: one dict per unit (blocks part at blank lines)."""
    units: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                units.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise AdoptError("systemctl show printed a line without '=': %r" % line)
        # ExecStart and EnvironmentFiles may appear once per value; keep them all, one per line.
        if key in current and key in _REPEATED_PROPERTIES:
            current[key] += "\n" + value
        else:
            current[key] = value
    if current:
        units.append(current)
    return units


def exec_start_argvs(value: str) -> list[list[str]]:
    """The argv of each command in an ExecStart property as systemctl show prints it:
    `{ path=/usr/bin/x ; argv[]=/usr/bin/x -a b ; ignore_errors=no ; ... }`.

    The argv is as written in the unit (systemd specifiers unexpanded), split as systemd
    prints it (space-joined, so quoting is lost: good enough to recognise the command)."""
    argvs = []
    for match in re.finditer(r"argv\[\]=(.*?) ; (?:ignore_errors|flags)=", value):
        try:
            argvs.append(shlex.split(match.group(1)))
        except ValueError:
            argvs.append(match.group(1).split())
    return argvs


# --------------------------------------------------------------------------------------------
# Celery command lines
# --------------------------------------------------------------------------------------------


@dataclass
class CeleryCommand:
    """What a `celery ...` (or `flower ...`) command line runs."""

    kind: str  # worker, beat or flower
    app: Optional[str] = None
    options: dict[str, str] = field(default_factory=dict)
    embedded_beat: bool = False
    broker_on_command_line: bool = False

    def short_app(self) -> Optional[str]:
        return app_short_name(self.app) if self.app else None


def app_short_name(celery_app: str) -> str:
    """The same short name the collection's name filters derive (proj.celery:app -> proj)."""
    head = re.split(r"[.:]", celery_app, maxsplit=1)[0]
    return re.sub(r"[^A-Za-z0-9_-]", "-", head)


def _program(argv: Sequence[str]) -> tuple[Optional[str], list[str]]:
    """('celery'|'flower'|None, the arguments after it): also `python -m celery`, `env X=1 celery`."""
    args = list(argv)
    while args:
        base = args[0].rsplit("/", 1)[-1]
        if base in ("celery", "flower"):
            return base, args[1:]
        if base == "env" or "=" in args[0] and not args[0].startswith("-"):
            args = args[1:]
            continue
        if re.fullmatch(r"python[0-9.]*", base):
            rest = args[1:]
            while rest and rest[0].startswith("-") and rest[0] != "-m":
                rest = rest[1:]
            if len(rest) >= 2 and rest[0] == "-m" and rest[1] in ("celery", "flower"):
                return rest[1], rest[2:]
            # A process shows its console script as `python /venv/bin/celery ...`.
            if rest and rest[0].rsplit("/", 1)[-1] in ("celery", "flower"):
                return rest[0].rsplit("/", 1)[-1], rest[1:]
            return None, []
        return None, []
    return None, []


def _split_option(arg: str) -> tuple[str, Optional[str]]:
    if arg.startswith("--") and "=" in arg:
        name, _sep, value = arg.partition("=")
        return name, value
    if re.fullmatch(r"-[A-Za-z].+", arg) and not arg.startswith("--"):
        return arg[:2], arg[2:]
    return arg, None


def parse_celery_command(argv: Sequence[str]) -> Optional[CeleryCommand]:
    """The celery worker, beat or flower a command line starts, or None for anything else
    (another celery subcommand such as `multi` or `inspect`, or not celery at all)."""
    program, args = _program(argv)
    if program is None:
        return None
    values: dict[str, str] = {}
    kind = "flower" if program == "flower" else None
    embedded_beat = False
    i = 0
    while i < len(args):
        name, inline = _split_option(args[i])
        if not name.startswith("-"):
            if kind is None:
                if name not in _SUBCOMMANDS:
                    return None
                kind = name
            i += 1
            continue
        known = dict(_GLOBAL_VALUE_OPTIONS)
        if kind == "worker":
            known.update(_WORKER_VALUE_OPTIONS)
        if kind == "worker" and name in ("-B", "--beat"):
            embedded_beat = True
            if inline:  # -B combined with another short flag (-BE): still beat
                pass
        elif kind == "flower" and name in ("--port", "--address"):
            value = inline if inline is not None else (args[i + 1] if i + 1 < len(args) else "")
            values[name.lstrip("-")] = value
            if inline is None:
                i += 1
        elif name in known:
            value = inline if inline is not None else (args[i + 1] if i + 1 < len(args) else "")
            if known[name]:
                values[known[name]] = value
            if inline is None:
                i += 1
        i += 1
    if kind is None:
        return None
    app = values.pop("app", None)
    broker = "broker" in values
    return CeleryCommand(kind=kind, app=app, options=values, embedded_beat=embedded_beat,
                         broker_on_command_line=broker)


def celery_nodename(option: Optional[str], hostname: str) -> str:
    """The nodename a worker answers to: Celery's rules for -n/--hostname (default celery@%h).

    %h is the full host name, %n its first label, %d the rest, %% a percent sign (what reaches
    Celery: in a unit file systemd already turned %%h into %h)."""
    template = option or "celery@%h"
    if "@" not in template:
        template = "celery@" + template
    name, _sep, domain = hostname.partition(".")
    out = []
    i = 0
    while i < len(template):
        c = template[i]
        if c == "%" and i + 1 < len(template):
            nxt = template[i + 1]
            out.append({"h": hostname, "n": name, "d": domain, "%": "%"}.get(nxt, c + nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------------
# ps, ss and cgroups
# --------------------------------------------------------------------------------------------


def parse_ps(text: str) -> dict[int, dict[str, Any]]:
    """`ps -eo pid=,ppid=,user=,args=`: {pid: {ppid, user, args}}."""
    processes = {}
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        processes[int(parts[0])] = {"ppid": int(parts[1]), "user": parts[2],
                                    "args": parts[3] if len(parts) > 3 else ""}
    return processes


def parse_ss_listeners(text: str) -> list[dict[str, Any]]:
    """`ss -Hltnp`: [{address, port, pids: [..], programs: [..]}] for each listening socket."""
    listeners = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        # With -H: State Recv-Q Send-Q Local Peer [Process]; some ss builds omit State with -l.
        local_index = 3 if fields[0] in ("LISTEN", "UNCONN") else 2
        local = fields[local_index]
        address, _sep, port = local.rpartition(":")
        if not port.isdigit():
            continue
        process = " ".join(fields[local_index + 2:])
        listeners.append({
            "address": address.strip("[]"),
            "port": int(port),
            "pids": sorted({int(p) for p in re.findall(r"pid=(\d+)", process)}),
            "programs": sorted(set(re.findall(r'\("([^"]+)"', process))),
        })
    return listeners


def unit_from_cgroup(text: str) -> Optional[str]:
    """The systemd unit a process belongs to, from /proc/<pid>/cgroup (v1 or v2)."""
    paths = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[1] in ("", "name=systemd")):
            paths.append(parts[2])
    for path in paths:
        for element in reversed(path.strip("/").split("/")):
            if element.endswith((".service", ".scope")):
                return element
    return None


# --------------------------------------------------------------------------------------------
# What is found, and the plan
# --------------------------------------------------------------------------------------------


def is_excluded(unit: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(unit, pattern) for pattern in patterns)


def find_celery_units(shown: Iterable[Mapping[str, str]], app: str, hostname: str,
                      exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The units that run a Celery worker, beat or Flower for `app` (its short name decides),
    except the collection's own (`exclude`, fnmatch patterns). A command without -A is counted
    as the same app: it cannot be told apart, and leaving it running is the worse mistake."""
    want = app_short_name(app)
    found = []
    for unit in shown:
        name = unit.get("Id", "")
        if not name or is_excluded(name, exclude) or unit.get("LoadState") != "loaded":
            continue
        for argv in exec_start_argvs(unit.get("ExecStart", "")):
            command = parse_celery_command(argv)
            if command is None or command.short_app() not in (want, None):
                continue
            entry: dict[str, Any] = {
                "unit": name,
                "kind": command.kind,
                "app": command.app,
                "embedded_beat": command.embedded_beat,
                "active": unit.get("ActiveState") in ("active", "activating", "reloading"),
                "enabled": unit.get("UnitFileState", "") in ("enabled", "enabled-runtime", "linked"),
                "fragment_path": unit.get("FragmentPath", ""),
                "dropin_paths": unit.get("DropInPaths", "").split(),
                "main_pid": int(unit.get("MainPID") or 0),
                "user": unit.get("User") or "root",
                "command": mask_url_passwords(" ".join(argv)),
                "broker_on_command_line": command.broker_on_command_line,
            }
            if command.kind == "worker":
                # The unit's text has specifiers systemd expands (%h is the home directory,
                # %% a percent sign); the process's own argv is what Celery saw: see
                # nodename_from_process. This is the fallback when the unit is not running.
                entry["nodename"] = celery_nodename(command.options.get("hostname"), hostname)
                entry["helper"] = helper_target(unit, argv)
            if command.kind == "flower":
                entry["port"] = int(command.options.get("port") or 5555)
                entry["address"] = command.options.get("address") or "0.0.0.0"
            found.append(entry)
            break
    return found


def venv_of_program(program: str) -> Optional[str]:
    """The virtualenv a unit's command runs from: /opt/app/venv for /opt/app/venv/bin/celery (or
    its bin/python); None for a bare name or anything not in a bin directory."""
    head, _sep, _name = program.rpartition("/")
    if not head.endswith("/bin"):
        return None
    return head[: -len("/bin")] or "/"


def helper_target(unit: Mapping[str, str], argv: Sequence[str]) -> dict[str, Any]:
    """How to ask the worker a unit runs with the unit's own virtualenv, working directory and
    EnvironmentFile (celery_control's venv, app_dir and environment_file): what a drain needs
    before the collection's virtualenv and credentials exist, through the broker the old worker
    itself uses. Environment= is not read: its values (a broker password) would be in the
    module's result; a worker whose broker is set only there or on its command line does not
    answer the helper, and the takeover stops before any change."""
    files = []
    for line in unit.get("EnvironmentFiles", "").splitlines():
        path = line.rsplit(" (ignore_errors=", 1)[0].strip()
        if path:
            files.append(path)
    return {"venv": venv_of_program(argv[0]) if argv else None,
            "app_dir": unit.get("WorkingDirectory", "").lstrip("-!") or "/",
            # The helper reads one file: the last, whose values systemd lets override the others'.
            "environment_file": files[-1] if files else None}


def nodename_from_process(args: str, hostname: str) -> Optional[str]:
    """The nodename of a running worker, from its own command line (what Celery saw)."""
    try:
        argv = shlex.split(args)
    except ValueError:
        argv = args.split()
    command = parse_celery_command(argv)
    if command is None or command.kind != "worker":
        return None
    return celery_nodename(command.options.get("hostname"), hostname)


def port_holders(listeners: Iterable[Mapping[str, Any]], ports: Mapping[str, int],
                 units_of_pids: Mapping[int, Optional[str]],
                 processes: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Who listens on each port the collection needs: [{service, port, address, pid, unit, user,
    command}]. `ports`: {what: port}, e.g. {"flower": 5555, "redis": 6379}."""
    holders = []
    for service, port in ports.items():
        for listener in listeners:
            if listener["port"] != int(port):
                continue
            for pid in listener["pids"] or [0]:
                process = processes.get(pid, {})
                holders.append({
                    "service": service, "port": int(port), "address": listener["address"],
                    "pid": pid or None, "unit": units_of_pids.get(pid) if pid else None,
                    "user": process.get("user"), "programs": listener["programs"],
                    "command": mask_url_passwords(str(process.get("args", ""))),
                })
    # One line per (service, unit or pid): IPv4 and IPv6 listeners of one process are one holder.
    unique: dict[tuple, dict[str, Any]] = {}
    for holder in holders:
        key = (holder["service"], holder["unit"] or holder["pid"])
        if key in unique:
            unique[key]["address"] += ", " + holder["address"]
        else:
            unique[key] = holder
    return list(unique.values())


def attribute_unseen_holders(holders: list[dict[str, Any]], own_active: Mapping[str, Sequence[str]]) -> None:
    """A listener ss shows without a process: ss -p reads /proc/<pid>/fd, which root may not
    read for another user's process without CAP_SYS_PTRACE (a container's root). When one of the
    collection's own units for that service is active (own_active: {service: [unit, ...]}), it is
    taken for the holder, marked `assumed`; otherwise the holder stays unknown (a conflict)."""
    for holder in holders:
        if holder["pid"] is None and holder["unit"] is None and own_active.get(holder["service"]):
            holder["unit"] = own_active[holder["service"]][0]
            holder["assumed"] = True


def build_plan(units: Sequence[Mapping[str, Any]], holders: Sequence[Mapping[str, Any]],
               adopt_units: Sequence[str], kept: Sequence[str], own_units: Mapping[str, Sequence[str]],
               kept_dir: str, broker_restart: bool = False) -> dict[str, Any]:
    """What the run does with what was found, and what it must refuse.

    broker_restart: the run restarts Redis. A worker that loses the broker while it holds an
    unacknowledged message can crash (kombu 5.7), so the old workers are drained and stopped
    before the restart, through the broker they use, instead of once the collection's workers
    consume (which need the restart: their ACL users).

    own_units: {"flower": patterns, "redis": patterns} of the units the collection itself runs
    on the port (a holder that is one of them is no conflict). kept: named units whose file is
    already in kept_dir (taken over by an earlier run)."""
    lines: list[str] = []
    unnamed = [u["unit"] for u in units if (u["active"] or u["enabled"]) and u["unit"] not in adopt_units]
    conflicts = []
    named = {u["unit"] for u in units}
    for u in units:
        if u["unit"] not in adopt_units:
            if u["unit"] in unnamed:
                lines.append("%s runs celery %s for this app and is not in celery_adopt_units: the run "
                             "stops here (name it to take it over)" % (u["unit"], u["kind"]))
            else:
                lines.append("%s (celery %s for this app) is inactive and disabled: left alone"
                             % (u["unit"], u["kind"]))
            continue
        beat = " and its embedded beat (-B)" if u.get("embedded_beat") else ""
        if u["kind"] == "worker" and broker_restart and u["active"]:
            what = ("drain %s (stop consuming, wait for its tasks) before Redis restarts, then stop "
                    "it%s (warm: SIGTERM to the main process), disable it; its queues wait in Redis "
                    "until the collection's workers consume" % (u.get("nodename"), beat))
        elif u["kind"] == "worker":
            what = ("drain %s (stop consuming, wait for its tasks) once the collection's workers "
                    "consume, then stop it%s (warm: SIGTERM to the main process), disable it"
                    % (u.get("nodename"), beat))
        elif u["kind"] == "beat":
            what = "stop it before the collection's beat starts, disable it"
        else:
            what = "stop it before the collection's Flower starts, disable it"
        if not u["active"]:
            what = "(not running) " + what
        if u["fragment_path"].startswith("/etc/systemd/system/"):
            files = "move %s (and its drop-ins) to %s" % (u["fragment_path"], kept_dir)
        else:
            files = "leave %s in place (not under /etc/systemd/system: a package's)" % (
                u["fragment_path"] or "its unit file")
        lines.append("%s (celery %s, runs as %s): %s; %s" % (u["unit"], u["kind"], u["user"], what, files))
        if u.get("broker_on_command_line"):
            lines.append("  %s has the broker URL on its command line (visible to every local user)"
                         % u["unit"])
    for name in adopt_units:
        if name in named:
            continue
        if name in kept:
            lines.append("%s: taken over by an earlier run, its unit file is kept in %s" % (name, kept_dir))
        else:
            lines.append("%s: named in celery_adopt_units but no such unit runs celery for this app "
                         "here: nothing to do" % name)
    for holder in holders:
        own = holder["unit"] and is_excluded(holder["unit"], own_units.get(holder["service"], ()))
        who = holder["unit"] or "pid %s (%s), in no unit" % (holder["pid"], holder["command"] or "?")
        if own:
            continue
        if holder["unit"] and holder["unit"] in adopt_units:
            lines.append("port %d (%s) is held by %s on %s: freed when it stops, before the "
                         "collection's %s starts"
                         % (holder["port"], holder["service"], who, holder["address"], holder["service"]))
            continue
        conflicts.append(holder)
        lines.append("port %d (%s) is held by %s on %s, which this run does not take over: the run "
                     "stops here" % (holder["port"], holder["service"], who, holder["address"]))
    return {"plan": lines, "unnamed": unnamed, "conflicts": conflicts}


# --------------------------------------------------------------------------------------------
# Redis: the protocol for a few anonymous questions, and CLIENT LIST
# --------------------------------------------------------------------------------------------


def resp_command(*args: str) -> bytes:
    """A command in the Redis protocol (RESP2 array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def resp_parse(data: bytes) -> tuple[Any, bytes]:
    """One RESP2 reply from the front of data: (value, rest). An error reply is an Exception
    value (not raised); incomplete data raises EOFError."""
    line, sep, rest = data.partition(b"\r\n")
    if not sep:
        raise EOFError("incomplete reply")
    kind, payload = line[:1], line[1:]
    if kind == b"+":
        return payload.decode(), rest
    if kind == b"-":
        return Exception(payload.decode()), rest
    if kind == b":":
        return int(payload), rest
    if kind == b"$":
        length = int(payload)
        if length < 0:
            return None, rest
        if len(rest) < length + 2:
            raise EOFError("incomplete reply")
        return rest[:length].decode(errors="replace"), rest[length + 2:]
    if kind == b"*":
        count = int(payload)
        items = []
        for _index in range(max(count, 0)):
            item, rest = resp_parse(rest)
            items.append(item)
        return (items if count >= 0 else None), rest
    raise AdoptError("not a Redis reply: %r" % line[:40])


def parse_client_list(text: str) -> list[dict[str, str]]:
    """CLIENT LIST: one dict per client (id, addr, user, name, cmd, ...)."""
    clients = []
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields:
            clients.append(fields)
    return clients


def anonymous_clients(clients: Iterable[Mapping[str, str]], own_id: Optional[str] = None) -> list[dict[str, str]]:
    """Clients connected as the default user (no credentials), except the asking connection.
    Redis before 6 has no `user` field: every client there is anonymous."""
    return [{"id": c.get("id", ""), "addr": c.get("addr", ""), "name": c.get("name", ""),
             "cmd": c.get("cmd", ""), "age": c.get("age", "")}
            for c in clients
            if c.get("user", "default") == "default" and c.get("id") != own_id]


def keyspace_keys(info_keyspace: str) -> dict[str, int]:
    """INFO keyspace -> {db0: keys, ...}."""
    counts = {}
    for line in info_keyspace.splitlines():
        match = re.match(r"(db\d+):keys=(\d+)", line.strip())
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts
