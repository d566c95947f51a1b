#!/usr/bin/python
# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: celery_adopt_facts
short_description: Find the hand-made Celery and Redis services a host runs, and plan their takeover
version_added: 0.1.0
description:
  - Reads C(systemctl show) of every service unit, C(ps), C(ss -ltnp) and C(/proc/<pid>/cgroup),
    and finds the units whose C(ExecStart) runs C(celery ... worker), C(celery ... beat),
    C(celery ... flower) or C(flower) for the same app as O(app) (the short name before the
    first C(.) or C(:) decides; a command without C(-A) counts as the same app), except the
    collection's own units (O(exclude_units)).
  - For a running worker, the nodename comes from its own process's command line (what Celery
    saw, after systemd expanded the unit's specifiers), so a drain can name it exactly.
  - For a worker, C(helper) says how to ask it through the broker it uses itself, before the
    collection's virtualenv and credentials exist (the virtualenv its command runs from, its
    C(WorkingDirectory) and its last C(EnvironmentFile)). C(Environment=) is not read, so no
    value of it ends up in the result.
  - Lists the processes that listen on the ports in O(ports), with their unit. A listener whose
    process C(ss) cannot name (root without C(CAP_SYS_PTRACE), as in a container, cannot read
    another user's file descriptors) is taken for an active unit of O(own_units) of that service,
    if there is one (marked C(assumed)).
  - With O(redis_port), asks the Redis on 127.0.0.1 at that port, without credentials, whether
    it answers (anonymous access is on), how many keys each database holds, and which clients are
    connected as the C(default) user (CLIENT LIST). It speaks the Redis protocol itself, so it
    needs no redis-py on a host the redis role has not set up yet.
  - Returns a plan, one line per finding, and the units that run but are not in O(adopt_units).
  - On a host not booted with systemd (no C(/run/systemd/system)) no units are searched.
  - Never changes anything.
author:
  - taskstack.celery maintainers (@taskstack)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  app:
    description:
      - The collection's Celery app (C(celery_app)). Empty skips the unit search (a Redis-only host).
    type: str
    default: ""
  exclude_units:
    description:
      - fnmatch patterns of the collection's own units, never reported as units to take over.
    type: list
    elements: str
    default: []
  adopt_units:
    description:
      - Units the operator named to take over (C(celery_adopt_units)).
    type: list
    elements: str
    default: []
  kept_dir:
    description:
      - Directory where taken-over unit files are kept; a named unit whose file is there was
        taken over by an earlier run.
    type: path
    default: /etc/systemd/system/taskstack-adopted
  ports:
    description:
      - Ports the collection's services will listen on, by service (V(flower), V(redis)).
    type: dict
    default: {}
  own_units:
    description:
      - By service, fnmatch patterns of the units of the collection that may hold its port
        (Flower's unit, C(redis-server.service)).
    type: dict
    default: {}
  redis_port:
    description:
      - Ask the Redis on 127.0.0.1 at this port without credentials. V(0) does not ask.
    type: int
    default: 0
  broker_restart:
    description:
      - The run restarts Redis (the fact C(redis_restart_pending) of the Redis hosts). The plan
        then says that the running old workers are drained and stopped before the restart.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Find what the runbook left on the host
  taskstack.celery.celery_adopt_facts:
    app: qventory.celery:app
    exclude_units:
      - celery-qventory-*.service
    adopt_units:
      - celery-qventory.service
      - flower.service
    ports:
      flower: 5555
  register: __celery_adopt_found

- name: Say what the run will do
  ansible.builtin.debug:
    msg: "{{ __celery_adopt_found.plan }}"
"""

RETURN = r"""
units:
  description: Units running a Celery worker, beat or Flower for the app.
  returned: always
  type: list
  elements: dict
  sample:
    - unit: celery-qventory.service
      kind: worker
      embedded_beat: true
      active: true
      enabled: true
      nodename: celery@web1
      fragment_path: /etc/systemd/system/celery-qventory.service
      main_pid: 812
      user: root
      helper:
        venv: /opt/qventory/venv
        app_dir: /srv/qventory
        environment_file: /etc/qventory/celery.env
port_holders:
  description: Processes listening on the O(ports), with their unit (or none).
  returned: always
  type: list
  elements: dict
unnamed:
  description: Units that run (or are enabled) and are not in O(adopt_units).
  returned: always
  type: list
  elements: str
conflicts:
  description: Port holders that are neither the collection's units nor units to take over.
  returned: always
  type: list
  elements: dict
kept:
  description: Units of O(adopt_units) whose unit file is already in O(kept_dir).
  returned: always
  type: list
  elements: str
plan:
  description: One line per finding, saying what the run will do with it.
  returned: always
  type: list
  elements: str
redis:
  description:
    - With O(redis_port), what an anonymous connection found. C(anonymous) is V(true) when the
      server answered PING without credentials; C(keys) counts keys by database; C(clients)
      lists the other clients connected as C(default) (id, addr, name, cmd, age).
  returned: always
  type: dict
  sample: {answered: true, anonymous: true, keys: {db0: 12}, clients: [{addr: "127.0.0.1:51234"}]}
"""

import os
import socket

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.taskstack.celery.plugins.module_utils.celery_adopt import (
    SHOW_PROPERTIES,
    AdoptError,
    anonymous_clients,
    attribute_unseen_holders,
    build_plan,
    find_celery_units,
    keyspace_keys,
    nodename_from_process,
    parse_client_list,
    parse_ps,
    parse_ss_listeners,
    parse_systemctl_show,
    port_holders,
    resp_command,
    resp_parse,
    unit_from_cgroup,
)


def _run(module: AnsibleModule, *args: str) -> str:
    rc, out, err = module.run_command(list(args), environ_update={"LC_ALL": "C", "SYSTEMD_COLORS": "0"})
    if rc != 0:
        module.fail_json(msg="%s failed (rc=%d): %s" % (" ".join(args), rc, err.strip()))
    return out


def service_units(module: AnsibleModule) -> list[str]:
    """Every service unit systemd knows of: loaded ones and unit files (a stopped, enabled one)."""
    names = set()
    for line in _run(module, "systemctl", "list-units", "--type=service", "--all", "--plain",
                     "--no-legend", "--no-pager").splitlines():
        parts = line.split()
        if parts and parts[0].endswith(".service"):
            names.add(parts[0])
    for line in _run(module, "systemctl", "list-unit-files", "--type=service", "--plain",
                     "--no-legend", "--no-pager").splitlines():
        parts = line.split()
        # Template units (name@.service) run nothing themselves.
        if parts and parts[0].endswith(".service") and not parts[0].endswith("@.service"):
            names.add(parts[0])
    return sorted(names)


def active_units(module: AnsibleModule, names: list) -> list:
    """Which of the exactly named units (no patterns) are active."""
    exact = [name for name in names if not set("*?[") & set(name)]
    if not exact or not os.path.isdir("/run/systemd/system"):
        return []
    rc, out, _err = module.run_command(["systemctl", "is-active", *exact], environ_update={"LC_ALL": "C"})
    del rc  # non-zero when any is inactive; the lines say which
    return [name for name, state in zip(exact, out.splitlines()) if state.strip() == "active"]


def read_cgroup_unit(pid: int):
    try:
        with open("/proc/%d/cgroup" % pid, encoding="utf-8") as handle:
            return unit_from_cgroup(handle.read())
    except OSError:
        return None


def read_cmdline(pid: int):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return None


def _exchange(conn: socket.socket, commands: list, pending: bytes) -> tuple[list, bytes]:
    """Send the commands, read as many replies; return them and what was read beyond."""
    conn.sendall(b"".join(resp_command(*c) for c in commands))
    data = pending
    replies: list = []
    while len(replies) < len(commands):
        try:
            value, data = resp_parse(data)
        except EOFError:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            continue
        replies.append(value)
    return replies, data


def ask_redis(port: int, timeout: float = 3.0) -> dict:
    """PING as the default user on 127.0.0.1:port; only when it answers PONG, CLIENT ID, INFO
    keyspace and CLIENT LIST (a server with a password counts one NOAUTH, not four)."""
    result = {"port": port, "answered": False, "anonymous": False, "keys": {}, "clients": [], "error": ""}
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            replies, rest = _exchange(conn, [("PING",)], b"")
            if replies and replies[0] == "PONG":
                more, rest = _exchange(conn, [("CLIENT", "ID"), ("INFO", "keyspace"), ("CLIENT", "LIST")], rest)
                replies += more
    except OSError as exc:
        result["error"] = str(exc)
        return result
    if not replies:
        result["error"] = "no reply"
        return result
    result["answered"] = True
    if isinstance(replies[0], Exception):
        # NOAUTH: a password is required; anything else is not anonymous either.
        result["error"] = str(replies[0]).split(".", 1)[0]
        return result
    result["anonymous"] = replies[0] == "PONG"
    own_id = str(replies[1]) if len(replies) > 1 and not isinstance(replies[1], Exception) else None
    if len(replies) > 2 and isinstance(replies[2], str):
        result["keys"] = keyspace_keys(replies[2])
    if len(replies) > 3 and isinstance(replies[3], str):
        result["clients"] = anonymous_clients(parse_client_list(replies[3]), own_id)
    elif len(replies) > 3:
        result["error"] = "CLIENT LIST refused: %s" % replies[3]
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            app=dict(type="str", default=""),
            exclude_units=dict(type="list", elements="str", default=[]),
            adopt_units=dict(type="list", elements="str", default=[]),
            kept_dir=dict(type="path", default="/etc/systemd/system/taskstack-adopted"),
            ports=dict(type="dict", default={}),
            own_units=dict(type="dict", default={}),
            redis_port=dict(type="int", default=0),
            broker_restart=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    hostname = socket.gethostname()
    result = dict(changed=False, units=[], port_holders=[], unnamed=[], conflicts=[], kept=[],
                  plan=[], redis={})
    try:
        units = []
        # sd_booted(): without systemd as init there are no units to take over (and no
        # systemctl to ask); ports and Redis are still looked at.
        if p["app"] and os.path.isdir("/run/systemd/system"):
            names = service_units(module)
            shown = parse_systemctl_show(_run(module, "systemctl", "show", "--no-pager",
                                              "-p", ",".join(SHOW_PROPERTIES), *names)) if names else []
            units = find_celery_units(shown, p["app"], hostname, p["exclude_units"])
        for unit in units:
            if unit["kind"] == "worker" and unit["main_pid"]:
                argv = read_cmdline(unit["main_pid"])
                found = nodename_from_process(" ".join(argv), hostname) if argv else None
                unit["nodename"] = found or unit["nodename"]
        processes = parse_ps(_run(module, "ps", "-eo", "pid=,ppid=,user=,args="))
        listeners = parse_ss_listeners(_run(module, "ss", "-Hltnp")) if p["ports"] else []
        pids = {pid for listener in listeners for pid in listener["pids"]}
        holders = port_holders(listeners, {k: int(v) for k, v in p["ports"].items()},
                               {pid: read_cgroup_unit(pid) for pid in pids}, processes)
        kept = [name for name in p["adopt_units"] if os.path.exists(os.path.join(p["kept_dir"], name))]
        own = {k: list(v) for k, v in p["own_units"].items()}
        if any(h["pid"] is None for h in holders):
            attribute_unseen_holders(holders, {service: active_units(module, names) for service, names in own.items()})
        outcome = build_plan(units, holders, p["adopt_units"], kept, own, p["kept_dir"],
                             broker_restart=p["broker_restart"])
    except AdoptError as exc:
        module.fail_json(msg=str(exc), **result)
    result.update(units=units, port_holders=holders, kept=kept, **outcome)
    if p["redis_port"]:
        result["redis"] = ask_redis(p["redis_port"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
