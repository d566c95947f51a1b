#!/usr/bin/python
# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Report whether a Celery app on Redis is healthy; unhealthy is data, never a failure."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: celery_health
short_description: Check a Celery app's broker, queues and workers against thresholds
version_added: 0.1.0
description:
  - Reads from the Redis broker, through redis-py, the depth of each queue in O(queues) (every
    priority list kombu keeps for it added up), the number of messages delivered and not yet
    acknowledged, and the persistence and memory fields of C(INFO).
  - With O(nodes), also asks those Celery workers, and only them, for ping, active, reserved
    and scheduled tasks, through a helper run with the app's virtualenv (as
    M(taskstack.celery.celery_worker_info) does).
  - Compares what it read with the thresholds. RV(healthy) is V(false) when an expected node
    did not answer ping, a persistence status is not V(ok), or a value is above its maximum;
    RV(problems) then names each one with its value and its limit.
  - The module fails only when it cannot read Redis or ask the workers; an unhealthy app is a
    result, not a failure (use M(ansible.builtin.assert) on RV(healthy) to fail a play).
  - Never changes anything.
author:
  - taskstack.celery maintainers (@taskstack)
extends_documentation_fragment:
  - taskstack.celery.redis_login
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  login_db:
    description:
      - The database of the broker, the number at the end of its URL (V(1) for
        C(redis://host:6379/1)). Queues read in another database would look empty.
    type: int
    default: 0
  queues:
    description:
      - Names of the Celery queues to measure, as the app declares them (for example
        V(default)). A queue that does not exist in Redis has depth 0.
    type: list
    elements: str
    default: []
  key_prefix:
    description:
      - The transport option C(global_keyprefix) of the app (C(broker_transport_options)),
        which kombu puts in front of every key.
    type: str
    default: ""
  priority_steps:
    description:
      - The transport option C(priority_steps). kombu keeps one list per step, the bare queue
        name for step 0.
    type: list
    elements: int
    default: [0, 3, 6, 9]
  unacked_key:
    description:
      - The transport option C(unacked_key), the hash of messages not acknowledged yet.
    type: str
    default: unacked
  max_queue_depth:
    description:
      - Maximum number of waiting messages in a queue, for every queue not in
        O(queue_max_depth). Omit to not check depths.
    type: int
  queue_max_depth:
    description:
      - Maximum depth per queue name, overriding O(max_queue_depth).
    type: dict
    default: {}
  max_unacked:
    description:
      - Maximum number of messages delivered to workers and not yet acknowledged, of all the
        queues of the database together (kombu keeps one hash for them). Omit to not check it.
    type: int
  max_memory_ratio:
    description:
      - Maximum of C(used_memory) / C(maxmemory). Not checked when the server has no
        C(maxmemory) (0).
    type: float
    default: 0.9
  max_aof_delayed_fsync:
    description:
      - Maximum C(aof_delayed_fsync), the number of times since Redis started that an fsync of
        the AOF waited for a slow disk. Omit to not check it.
    type: int
  require_aof:
    description:
      - Report a problem when AOF persistence is off.
    type: bool
    default: false
  nodes:
    description:
      - Exact nodenames of the workers that must answer, for example V(default-blue@web1).
        Omit to not ask any worker; then O(app), O(app_dir) and O(venv) are not needed.
    type: list
    elements: str
  node_timeout:
    description:
      - Seconds to wait for the workers' replies to each request.
    type: float
    default: 2.0
  app:
    description:
      - The Celery app, as given to C(celery -A). Required with O(nodes).
    type: str
  app_dir:
    description:
      - The app's working directory (the units' C(WorkingDirectory)). Required with O(nodes).
    type: path
  venv:
    description:
      - The virtualenv that has Celery and the app's dependencies. Required with O(nodes).
    type: path
  environment_file:
    description:
      - The systemd EnvironmentFile of the worker units. Passwords in it are masked in
        everything this module returns.
    type: path
  environment:
    description:
      - More variables for the helper, on top of O(environment_file). Not logged.
    type: dict
    default: {}
  run_as:
    description:
      - Run the helper as this user instead of the user the module runs as.
    type: str
requirements:
  - redis (redis-py) 4.3 or newer for the Python that runs the module; Debian package
    C(python3-redis), which the C(taskstack.celery.redis) role installs.
notes:
  - Runs on the Redis host (over its unix socket) or on any host that reaches it, such as a
    worker host; O(nodes) needs a host with the app's virtualenv.
  - The ACL user needs C(+info +llen +hlen) and read access to the keys (C(%R~*)). The
    C(monitor) user of the C(taskstack.celery.redis) role has exactly that (and C(+ping)), and
    no command that returns a value.
  - The C(taskstack.celery.celery_worker) role installs a command on each worker host that runs
    the same checks without Ansible (C(/usr/local/bin/celery-health-<app>)), and
    C(taskstack.celery.status) shows them for a whole inventory.
seealso:
  - module: taskstack.celery.celery_worker_info
  - module: taskstack.celery.redis_runtime
"""

EXAMPLES = r"""
- name: Check the broker and the queues from the Redis host
  taskstack.celery.celery_health:
    login_unix_socket: /run/redis/redis-server.sock
    login_user: "{{ redis_monitor_user }}"
    login_password: "{{ redis_monitor_password }}"
    queues: [default, bulk]
    max_queue_depth: 1000
    queue_max_depth:
      bulk: 50000
    max_unacked: 500
    require_aof: true
  register: __celery_health

- name: Check the workers of this host too, then fail the play when something is wrong
  taskstack.celery.celery_health:
    login_host: redis.internal
    login_user: monitor
    login_password: "{{ redis_monitor_password }}"
    queues: [default]
    nodes:
      - default-blue@{{ ansible_facts['hostname'] }}
    app: proj
    app_dir: /srv/proj/current
    venv: /srv/proj/venv
    environment_file: /etc/celery/proj.env
    run_as: celery
  register: __celery_health

- name: Fail with the problems found
  ansible.builtin.assert:
    that: __celery_health.healthy
    fail_msg: "{{ __celery_health.problems | join('; ') }}"
"""

RETURN = r"""
healthy:
  description: V(true) when RV(problems) is empty.
  returned: success
  type: bool
  sample: false
problems:
  description: What is wrong, each with its value and the limit it broke.
  returned: success
  type: list
  elements: str
  sample:
    - "node default-green@web1: no answer to ping"
    - "queue default: depth 1520 > max 1000"
    - "redis aof_last_write_status: err (want ok)"
nodes:
  description:
    - Per node of O(nodes), whether it answered ping, and how many tasks it runs (active),
      holds prefetched (reserved) and holds until their ETA (scheduled); a count is V(null)
      when the node did not answer it. Empty without O(nodes).
  returned: success
  type: dict
  sample:
    default-blue@web1: {ping: true, active: 1, reserved: 4, scheduled: 0}
    default-green@web1: {ping: false, active: null, reserved: null, scheduled: null}
queues:
  description:
    - Per queue of O(queues), the waiting messages (RV(queues.depth)), by priority step, and
      the maximum that applied.
  returned: success
  type: dict
  contains:
    depth:
      description: Messages waiting, all priority lists added up.
      type: int
    by_priority:
      description: Messages waiting per priority step (the step as text).
      type: dict
    max_depth:
      description: The maximum depth checked, V(null) when not checked.
      type: int
  sample:
    default: {depth: 5, by_priority: {"0": 2, "3": 1, "6": 0, "9": 2}, max_depth: 1000}
unacked:
  description:
    - Messages delivered and not acknowledged, of every queue of the database (one hash), the
      key of that hash, and its maximum.
  returned: success
  type: dict
  sample: {count: 1, key: "proj:unacked", max: 500}
persistence:
  description:
    - Fields of C(INFO persistence) and C(INFO memory). RV(persistence.memory_ratio) is
      V(null) when the server has no C(maxmemory); RV(persistence.aof_delayed_fsync) is V(null)
      while AOF is off.
  returned: success
  type: dict
  contains:
    aof_enabled:
      description: Whether AOF is on.
      type: bool
    aof_last_write_status:
      description: V(ok) or V(err).
      type: str
    aof_last_bgrewrite_status:
      description: V(ok) or V(err).
      type: str
    rdb_last_bgsave_status:
      description: V(ok) or V(err).
      type: str
    aof_delayed_fsync:
      description: Delayed AOF fsyncs since the server started.
      type: int
    used_memory:
      description: Bytes allocated by Redis.
      type: int
    maxmemory:
      description: The memory limit in bytes, 0 for none.
      type: int
    memory_ratio:
      description: RV(persistence.used_memory) / RV(persistence.maxmemory).
      type: float
  sample:
    aof_enabled: true
    aof_last_write_status: ok
    aof_last_bgrewrite_status: ok
    rdb_last_bgsave_status: ok
    aof_delayed_fsync: 0
    used_memory: 1542888
    maxmemory: 67108864
    memory_ratio: 0.023
replication:
  description:
    - This server's place in replication, from C(INFO replication). A replica that is not
      V(online) at the primary, or a replica whose link to its primary is not V(up), makes
      RV(healthy) V(false), as what it has not received is lost if the primary dies.
    - A primary (C(role) V(primary)) lists C(replicas), each with
      C(address), C(state), C(behind_bytes) (the replication stream it has not confirmed) and
      C(lag_seconds) (since it last confirmed). A replica names its C(primary), C(link),
      C(offset) and C(last_io_seconds). A server without replicas is a primary with none.
  returned: success
  type: dict
  sample:
    role: primary
    offset: 10452
    replicas:
      - {address: "10.0.0.2:6379", state: online, behind_bytes: 0, lag_seconds: 0}
"""

from typing import Any, Mapping, Optional

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    TARGET_ARGUMENT_SPEC,
    CeleryControlError,
    HelperTarget,
)
from ansible_collections.taskstack.celery.plugins.module_utils.celery_health import (
    NODE_FACTS,
    PRIORITY_STEPS,
    UNACKED_KEY,
    KombuKeys,
    Thresholds,
    collect_info,
    collect_queues,
    collect_replication,
    collect_unacked,
    evaluate,
)
from ansible_collections.taskstack.celery.plugins.module_utils.redis_client import (
    Endpoint,
    RedisError,
    endpoint_from_params,
    login_argument_spec,
    open_client,
    require_redis,
)


def argument_spec() -> dict:
    # The helper's options, optional here: only O(nodes) needs them (required_by).
    spec = {name: dict(option, required=False) for name, option in TARGET_ARGUMENT_SPEC.items()}
    spec.update(
        **login_argument_spec(),
        login_db={"type": "int", "default": 0},
        queues={"type": "list", "elements": "str", "default": []},
        key_prefix={"type": "str", "default": "", "no_log": False},
        priority_steps={"type": "list", "elements": "int", "default": list(PRIORITY_STEPS)},
        unacked_key={"type": "str", "default": UNACKED_KEY, "no_log": False},
        max_queue_depth={"type": "int"},
        queue_max_depth={"type": "dict", "default": {}},
        max_unacked={"type": "int"},
        max_memory_ratio={"type": "float", "default": 0.9},
        max_aof_delayed_fsync={"type": "int"},
        require_aof={"type": "bool", "default": False},
        nodes={"type": "list", "elements": "str"},
        node_timeout={"type": "float", "default": 2.0},
    )
    return spec


def endpoint(params: Mapping[str, Any]) -> Endpoint:
    """As redis_runtime connects (the unix socket when it exists), in the broker's database."""
    return endpoint_from_params(params, db=params["login_db"])


def thresholds(params: Mapping[str, Any]) -> Thresholds:
    """The limits, checked: a negative maximum or a depth that is not a number is refused."""
    per_queue: dict[str, int] = {}
    for queue, limit in (params["queue_max_depth"] or {}).items():
        try:
            per_queue[str(queue)] = int(limit)
        except (TypeError, ValueError):
            raise ValueError("queue_max_depth.%s: %r is not a whole number" % (queue, limit))
    limits = [("max_queue_depth", params["max_queue_depth"]), ("max_unacked", params["max_unacked"]),
              ("max_memory_ratio", params["max_memory_ratio"]),
              ("max_aof_delayed_fsync", params["max_aof_delayed_fsync"])]
    limits += [("queue_max_depth.%s" % queue, limit) for queue, limit in per_queue.items()]
    for name, value in limits:
        if value is not None and value < 0:
            raise ValueError("%s must not be negative, got %s" % (name, value))
    return Thresholds(max_queue_depth=params["max_queue_depth"], queue_max_depth=per_queue,
                      max_unacked=params["max_unacked"],
                      max_memory_ratio=params["max_memory_ratio"],
                      max_aof_delayed_fsync=params["max_aof_delayed_fsync"],
                      require_aof=params["require_aof"])


def read_broker(params: Mapping[str, Any], keys: KombuKeys) -> dict[str, Any]:
    """queues, unacked and info from Redis; raises RedisError or OSError when it cannot."""
    client = open_client(endpoint(params))
    try:
        return {"queues": collect_queues(client, params["queues"], keys),
                "unacked": collect_unacked(client, keys),
                "info": collect_info(client),
                "replication": collect_replication(client)}
    finally:
        client.close()


def ask_nodes(module: AnsibleModule) -> Optional[dict[str, Any]]:
    """summarize_inspection() of NODE_FACTS from the nodes, None when no node is expected."""
    params = module.params
    if not params["nodes"]:
        return None
    target = HelperTarget.from_params(params)
    module.no_log_values.update(target.secrets)
    return target.inspect(params["nodes"], NODE_FACTS, params["node_timeout"])


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_by={"nodes": ["app", "app_dir", "venv"]})
    params = module.params
    if params["login_db"] < 0:
        module.fail_json(msg="login_db must not be negative, got %d" % params["login_db"])
    try:
        limits = thresholds(params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    require_redis(module)
    keys = KombuKeys(prefix=params["key_prefix"], priority_steps=params["priority_steps"],
                     unacked_key=params["unacked_key"])
    try:
        broker = read_broker(params, keys)
    except (OSError, RedisError) as exc:
        module.fail_json(msg="cannot read Redis at %s: %s" % (endpoint(params).describe(), exc))
    try:
        inspection = ask_nodes(module)
    except CeleryControlError as exc:
        module.fail_json(msg=str(exc), reason=exc.kind, helper_stderr=exc.detail)
    result = evaluate(broker["queues"], broker["unacked"], broker["info"], limits, keys=keys,
                      expected_nodes=params["nodes"] or (), inspection=inspection,
                      replication=broker["replication"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
