#!/usr/bin/python
# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply settings to a running Redis without losing data or restarting it needlessly."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_runtime
short_description: Change a running Redis safely (persistence mode, CONFIG SET, ACL LOAD)
version_added: 0.1.0
description:
  - Talks to the local Redis over its unix socket (or TCP) as an ACL user through redis-py,
    with the password sent inside the protocol, never on a command line.
  - I(appendonly) switches AOF on or off at runtime and waits until the data is on disk in the
    new form. Turning AOF on in the configuration of a server that holds data and restarting
    loads an empty dataset; this module does the switch with C(CONFIG SET appendonly yes) and
    waits until the AOF rewrite has finished (a rewrite can be scheduled behind a running
    BGSAVE) and succeeded.
  - I(config) compares the desired directives with C(CONFIG GET), sets the differing ones that
    Redis can change at runtime, and reports the rest in RV(restart_required) and
    RV(restart_reasons) instead of restarting.
  - I(wait_for_idle) waits until no BGSAVE or AOF rewrite runs, so a restart never interrupts
    one.
author:
  - taskstack.celery maintainers (@taskstack)
extends_documentation_fragment:
  - taskstack.celery.redis_login
options:
  allow_unauthenticated:
    description:
      - When the credentials are refused, try again without AUTH. Only a server that is not
        managed yet (stock configuration, default user open) accepts that; a managed one has
        its default user off and refuses.
    type: bool
    default: true
  appendonly:
    description:
      - Desired AOF state. When it differs from the live one the module switches it at
        runtime and waits until the new persistence files are complete. Omit to leave it.
    type: bool
  config:
    description:
      - Desired directives (name to value, as written in redis.conf). Differing ones are set
        with CONFIG SET unless listed in I(restart_only) or refused by Redis as immutable.
    type: dict
    default: {}
  restart_only:
    description:
      - Directives never changed at runtime; a difference only makes RV(restart_required)
        true.
    type: list
    elements: str
    default: []
  acl_load:
    description: Reload the ACL file with C(ACL LOAD).
    type: bool
    default: false
  wait_for_idle:
    description: Wait until no BGSAVE and no AOF rewrite runs or is scheduled.
    type: bool
    default: false
  rewrite_config_file:
    description:
      - When the live server was started on this file (C(config_file) of C(INFO server)) and
        I(config) changed a setting, persist the running configuration there with
        C(CONFIG REWRITE), as Sentinel does after a failover. For a server that owns its
        configuration file (a replicated node's state file); omit otherwise.
    type: path
  timeout:
    description: Seconds to wait for a rewrite or BGSAVE before failing.
    type: int
    default: 600
requirements:
  - redis (redis-py) 4.3 or newer for the Python that runs the module; Debian package
    C(python3-redis), which the C(taskstack.celery.redis) role installs.
notes:
  - Supports check mode; then nothing is set and nothing is waited for.
"""

EXAMPLES = r"""
- name: Switch a running server to AOF before its configuration says so
  taskstack.celery.redis_runtime:
    login_unix_socket: /run/redis/redis-server.sock
    login_user: admin
    login_password: "{{ redis_admin_password }}"
    appendonly: true

- name: Apply what can change at runtime, learn whether a restart is needed
  taskstack.celery.redis_runtime:
    login_unix_socket: /run/redis/redis-server.sock
    login_user: admin
    login_password: "{{ redis_admin_password }}"
    config:
      maxmemory: 2gb
      appendfsync: everysec
    restart_only: [dir, databases]
    acl_load: true
  register: runtime
"""

RETURN = r"""
redis_version:
  description: Version of the live server.
  returned: always
  type: str
  sample: 7.0.15
changed_settings:
  description: Directives set with CONFIG SET (or that would be, in check mode).
  returned: always
  type: list
  elements: str
restart_required:
  description: Whether some directive differs that Redis cannot take at runtime.
  returned: always
  type: bool
restart_reasons:
  description: The differing directives that need a restart, with live and desired values.
  returned: always
  type: list
  elements: str
config_rewritten:
  description: Whether the running configuration was persisted with CONFIG REWRITE (I(rewrite_config_file)).
  returned: always
  type: bool
appendonly_switched:
  description: Whether AOF was switched at runtime (and the new files completed).
  returned: always
  type: bool
persistence:
  description: Fields of INFO persistence after the module ran.
  returned: always
  type: dict
  sample: {aof_enabled: "1", aof_rewrite_in_progress: "0", aof_last_bgrewrite_status: ok}
"""

import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.taskstack.celery.plugins.module_utils.redis_client import (
    Endpoint,
    RedisConnectionError,
    RedisError,
    ResponseError,
    config_get,
    endpoint_from_params,
    flat_info,
    is_refused_login,
    login_argument_spec,
    open_client,
    require_redis,
)

_MEMORY = re.compile(r"^(\d+)\s*(k|kb|m|mb|g|gb)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 1000 ** 2, "mb": 1024 ** 2, "g": 1000 ** 3, "gb": 1024 ** 3}

# Directives whose runtime change is handled elsewhere or unsafe to make behind the server's
# back: appendonly only through the migration above; dir would make the next load read an
# empty directory.
ALWAYS_RESTART_ONLY = frozenset({"dir", "appendonly", "aclfile", "appendfilename", "appenddirname"})


def normalize(value) -> str:
    """The form CONFIG GET answers in: booleans yes/no, quotes and extra blanks gone."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    text = str(value).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return " ".join(text.split())


def same_value(desired, live: str) -> bool:
    want = normalize(desired)
    have = normalize(live)
    if want.lower() == have.lower():
        return True
    mem = _MEMORY.match(want)
    if mem and have.isdigit():
        return int(mem.group(1)) * _UNITS[(mem.group(2) or "").lower()] == int(have)
    return False


def persistence_busy(info: dict) -> bool:
    return (
        info.get("rdb_bgsave_in_progress") == "1"
        or info.get("aof_rewrite_in_progress") == "1"
        or info.get("aof_rewrite_scheduled") == "1"
    )


class Runtime:
    """The changes, on a redis-py client (or anything with its info/config_*/bgsave methods)."""

    def __init__(self, client, timeout: float, sleep=time.sleep, clock=time.monotonic) -> None:
        self.client = client
        self.timeout = timeout
        self.sleep = sleep
        self.clock = clock

    def persistence(self) -> dict:
        return flat_info(self.client, "persistence")

    def wait_idle(self, what: str) -> dict:
        deadline = self.clock() + self.timeout
        while True:
            info = self.persistence()
            if not persistence_busy(info):
                return info
            if self.clock() > deadline:
                raise TimeoutError("%s: a BGSAVE or AOF rewrite still runs after %ss" % (what, self.timeout))
            self.sleep(0.2)

    def switch_appendonly(self, enable: bool, check_mode: bool) -> bool:
        info = self.persistence()
        if (info.get("aof_enabled") == "1") == enable:
            return False
        if check_mode:
            return True
        if enable:
            # Redis starts an AOF rewrite now, or schedules it behind a running BGSAVE. Until it
            # has finished and succeeded, no AOF on disk holds the dataset.
            self.client.config_set("appendonly", "yes")
            info = self.wait_idle("enabling AOF")
            if info.get("aof_enabled") != "1" or info.get("aof_last_bgrewrite_status") != "ok":
                raise RuntimeError("AOF rewrite after enabling appendonly did not succeed: %r" % info)
        else:
            # Without AOF the next start loads dump.rdb: make it hold everything first.
            self.client.config_set("appendonly", "no")
            self.wait_idle("disabling AOF")
            before = self.persistence().get("rdb_last_save_time")
            self.client.bgsave()
            deadline = self.clock() + self.timeout
            while True:
                info = self.persistence()
                if info.get("rdb_bgsave_in_progress") == "0" and info.get("rdb_last_save_time") != before:
                    break
                if self.clock() > deadline:
                    raise TimeoutError("BGSAVE after disabling AOF did not finish in %ss" % self.timeout)
                self.sleep(0.2)
            if info.get("rdb_last_bgsave_status") != "ok":
                raise RuntimeError("BGSAVE after disabling appendonly failed: %r" % info)
        return True

    def rewrite_if_started_on(self, path: str) -> bool:
        """CONFIG REWRITE when the server runs on the file at path (else the file it runs on is
        not the one meant: a server started on another file is left alone)."""
        if not started_on(flat_info(self.client, "server"), path):
            return False
        self.client.config_rewrite()
        return True

    def apply_config(self, desired: dict, restart_only, check_mode: bool):
        changed, reasons = [], []
        fixed = ALWAYS_RESTART_ONLY | set(restart_only)
        for name in sorted(desired):
            live = config_get(self.client, name)
            if live is None:
                reasons.append("%s: unknown to the live server" % name)
                continue
            if same_value(desired[name], live):
                continue
            if name in fixed:
                reasons.append("%s: %r -> %r" % (name, live, normalize(desired[name])))
                continue
            if not check_mode:
                try:
                    self.client.config_set(name, normalize(desired[name]))
                except ResponseError as exc:
                    if "immutable" not in str(exc) and "protected" not in str(exc):
                        raise
                    reasons.append("%s: %r -> %r (immutable)" % (name, live, normalize(desired[name])))
                    continue
            changed.append(name)
        return changed, reasons


def started_on(info: dict, path: str) -> bool:
    return bool(path) and info.get("config_file") == path


def endpoint(params) -> Endpoint:
    return endpoint_from_params(params)


def connect(params, opener=open_client):
    """A client logged in with the credentials, or without any where they are refused and
    allow_unauthenticated is set (a managed server refuses that too: NOAUTH)."""
    where = endpoint(params)
    try:
        return opener(where)
    except RedisError as exc:
        if not params["allow_unauthenticated"] or not where.password or not is_refused_login(exc):
            raise
    return opener(where.without_auth())


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            **login_argument_spec(),
            allow_unauthenticated=dict(type="bool", default=True),
            appendonly=dict(type="bool"),
            config=dict(type="dict", default={}),
            restart_only=dict(type="list", elements="str", default=[]),
            acl_load=dict(type="bool", default=False),
            wait_for_idle=dict(type="bool", default=False),
            rewrite_config_file=dict(type="path"),
            timeout=dict(type="int", default=600),
        ),
        supports_check_mode=True,
    )
    require_redis(module)
    p = module.params
    result = dict(changed=False, changed_settings=[], restart_required=False, restart_reasons=[],
                  appendonly_switched=False, persistence={}, redis_version="", config_rewritten=False)
    try:
        client = connect(p)
    except (OSError, RedisError) as exc:
        module.fail_json(msg="cannot reach Redis: %s" % exc, **result)
    try:
        runtime = Runtime(client, p["timeout"])
        result["redis_version"] = flat_info(client, "server").get("redis_version", "")
        if p["appendonly"] is not None:
            result["appendonly_switched"] = runtime.switch_appendonly(p["appendonly"], module.check_mode)
        if p["config"]:
            changed, reasons = runtime.apply_config(p["config"], p["restart_only"], module.check_mode)
            result["changed_settings"] = changed
            result["restart_reasons"] = reasons
            result["restart_required"] = bool(reasons)
            if changed and p["rewrite_config_file"] and not module.check_mode:
                result["config_rewritten"] = runtime.rewrite_if_started_on(p["rewrite_config_file"])
        if p["acl_load"] and not module.check_mode:
            try:
                client.acl_load()
                result["changed"] = True
            except ResponseError as exc:
                if "not configured to use an ACL file" not in str(exc):
                    raise
                result["restart_required"] = True
                result["restart_reasons"].append("aclfile: the live server has none")
            except RedisConnectionError:
                # Redis disconnects the clients of the users it reloaded, this one included,
                # sometimes before the reply arrives. The reconnect below tells whether the
                # new file took: its admin user must authenticate.
                result["changed"] = True
            # Either way this connection belongs to a user that no longer exists.
            client.close()
            client = connect(p)
            runtime.client = client
        elif p["acl_load"]:
            result["changed"] = True
        if p["wait_for_idle"] and not module.check_mode:
            runtime.wait_idle("waiting before a restart")
        result["persistence"] = runtime.persistence()
    except (OSError, RedisError, RuntimeError) as exc:
        module.fail_json(msg=str(exc), **result)
    finally:
        client.close()
    result["changed"] = result["changed"] or result["appendonly_switched"] or bool(result["changed_settings"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
