#!/usr/bin/python
# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one Redis Sentinel knows of the primary it watches; read-only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_sentinel_info
short_description: Read one Redis Sentinel's view of the primary it watches
version_added: 0.1.0
description:
  - Asks a Redis Sentinel (C(SENTINEL MASTER), C(SENTINEL REPLICAS), C(SENTINEL SENTINELS),
    C(SENTINEL CKQUORUM)) which server it takes for the primary of O(master_name), which
    replicas and other sentinels it knows, and whether the sentinels can agree on a failover.
  - RV(healthy) is V(false), and RV(problems) names why, when this sentinel sees the primary
    down (C(s_down) or C(o_down)), a replica down or disconnected or without its link to the
    primary, or cannot reach a quorum and a majority (C(CKQUORUM) refused).
  - Never changes anything; fails only when the sentinel cannot be read.
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
  login_host:
    description: Address of the sentinel.
    type: str
    default: 127.0.0.1
  login_port:
    description: Port of the sentinel (not a data node's).
    type: int
    default: 26379
  login_password:
    description:
      - The sentinel's own password (C(requirepass) in C(sentinel.conf)), not a data node's.
        Never logged or returned.
    type: str
  master_name:
    description: The name the sentinels know the primary by (C(sentinel monitor <name> ...)).
    type: str
    required: true
requirements:
  - redis (redis-py)
"""

EXAMPLES = r"""
- name: Ask the local sentinel which server is the primary
  taskstack.celery.redis_sentinel_info:
    login_port: 26379
    login_password: "{{ sentinel_password }}"
    master_name: taskstack
  register: __sentinel_view
"""

RETURN = r"""
healthy:
  description: Whether the primary and every replica are up as this sentinel sees them and a failover could be authorised.
  returned: success
  type: bool
problems:
  description: One sentence per problem found; empty when healthy.
  returned: success
  type: list
  elements: str
primary:
  description: The primary this sentinel names, C(ip:port), with its flags.
  returned: success
  type: dict
  sample: {address: "127.0.0.1:6411", flags: "master"}
replicas:
  description: The replicas this sentinel knows, each with C(address), C(flags), C(link) (C(ok) or C(err)) and C(offset).
  returned: success
  type: list
  elements: dict
  sample: [{address: "127.0.0.1:6412", flags: "slave", link: "ok", offset: 10466}]
sentinels:
  description: How many sentinels watch the primary, this one included.
  returned: success
  type: int
  sample: 3
quorum:
  description: The quorum this sentinel is configured with.
  returned: success
  type: int
  sample: 2
ckquorum:
  description: The sentinel's answer to C(SENTINEL CKQUORUM).
  returned: success
  type: str
  sample: OK 3 usable Sentinels. Quorum and failover authorization can be reached
"""

from typing import Any, Iterable, Mapping, Sequence

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.taskstack.celery.plugins.module_utils.redis_client import (
    Endpoint,
    RedisError,
    open_client,
    require_redis,
)

DOWN_FLAGS = ("s_down", "o_down", "disconnected")


def pairs(reply: Sequence[Any]) -> dict[str, str]:
    """A sentinel's flat [name, value, name, value, ...] reply as a dict of text."""
    items = [str(item) for item in reply]
    return dict(zip(items[0::2], items[1::2]))


def address(state: Mapping[str, str]) -> str:
    return "%s:%s" % (state.get("ip"), state.get("port"))


def down(state: Mapping[str, str]) -> list[str]:
    return [flag for flag in str(state.get("flags", "")).split(",") if flag in DOWN_FLAGS]


def sentinel_view(master: Mapping[str, str], replicas: Iterable[Mapping[str, str]],
                  others: Iterable[Mapping[str, str]], ckquorum: str) -> dict[str, Any]:
    """{healthy, problems, primary, replicas, sentinels, quorum, ckquorum} from the replies."""
    problems = []
    primary = {"address": address(master), "flags": master.get("flags", "")}
    if down(master):
        problems.append("primary %s is %s" % (primary["address"], " and ".join(down(master))))
    listed = []
    for replica in replicas:
        entry = {"address": address(replica), "flags": replica.get("flags", ""),
                 "link": replica.get("master-link-status", ""),
                 "offset": int(replica.get("slave-repl-offset") or 0)}
        listed.append(entry)
        if down(replica):
            problems.append("replica %s is %s" % (entry["address"], " and ".join(down(replica))))
        elif entry["link"] != "ok":
            problems.append("replica %s has no link to the primary (%s)" % (entry["address"], entry["link"]))
    if not ckquorum.startswith("OK"):
        problems.append("no failover possible: %s" % ckquorum)
    return {"healthy": not problems, "problems": problems, "primary": primary, "replicas": listed,
            "sentinels": 1 + len(list(others)), "quorum": int(master.get("quorum") or 0),
            "ckquorum": ckquorum}


def read_sentinel(client: Any, name: str) -> dict[str, Any]:
    """Ask the sentinel; commands sent as `SENTINEL <sub>` so that no redis-py version parses them."""
    master = pairs(client.execute_command("SENTINEL", "MASTER", name))
    replicas = [pairs(r) for r in client.execute_command("SENTINEL", "REPLICAS", name)]
    others = [pairs(s) for s in client.execute_command("SENTINEL", "SENTINELS", name)]
    try:
        ckquorum = str(client.execute_command("SENTINEL", "CKQUORUM", name))
    except RedisError as exc:  # NOQUORUM is an error reply: an answer here
        ckquorum = str(exc)
    return sentinel_view(master, replicas, others, ckquorum)


def main() -> None:
    module = AnsibleModule(argument_spec={
        "login_host": {"type": "str", "default": "127.0.0.1"},
        "login_port": {"type": "int", "default": 26379},
        "login_password": {"type": "str", "no_log": True},
        "master_name": {"type": "str", "required": True},
    }, supports_check_mode=True)
    require_redis(module)
    params = module.params
    endpoint = Endpoint(host=params["login_host"], port=params["login_port"], password=params["login_password"])
    try:
        client = open_client(endpoint)
        try:
            view = read_sentinel(client, module.params["master_name"])
        finally:
            client.close()
    except (OSError, RedisError) as exc:
        module.fail_json(msg="cannot read the sentinel at %s: %s" % (endpoint.describe(), exc))
    module.exit_json(changed=False, **view)


if __name__ == "__main__":
    main()
