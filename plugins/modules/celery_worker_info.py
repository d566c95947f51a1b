#!/usr/bin/python
# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: celery_worker_info
short_description: Ask named Celery workers what they run, hold and consume
version_added: 0.1.0
description:
  - Sends Celery's C(inspect) requests (ping, stats, active, reserved, scheduled, active_queues)
    to the workers named in O(nodes), and only to them, and reports what each one answered.
  - Runs a small helper with the app's own virtualenv (C(<venv>/bin/python)), in O(app_dir),
    with the variables of the worker units' EnvironmentFile, so it reaches the broker exactly as
    the workers do. The helper gets its program and request on stdin; no secret is ever put on
    a command line.
  - A node that did not answer within O(timeout) is listed in RV(unanswered), and every fact it
    did not answer is V(null) (unknown); it is never reported idle or drained.
    Replies from nodes that were not asked are ignored (see RV(ignored_replies)).
  - Never changes anything.
author:
  - taskstack.celery maintainers (@taskstack)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - taskstack.celery.celery_target
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  nodes:
    description:
      - Exact nodenames of the workers to ask, for example V(default-blue@web1). At least one;
        a request without a destination would go to every worker of the broker.
    type: list
    elements: str
    required: true
  facts:
    description:
      - What to ask each node. V(active) and V(reserved) together give RV(nodes.idle) and
        RV(drained).
    type: list
    elements: str
    choices: [ping, stats, active, reserved, scheduled, active_queues]
    default: [ping, stats, active, reserved, active_queues]
  timeout:
    description:
      - Seconds to wait for the replies of each request. A node that answers later is unknown.
    type: float
    default: 2.0
notes:
  - The helper needs C(python) in O(venv) with Celery 5 importable, and the broker reachable.
seealso:
  - module: taskstack.celery.celery_consumer
  - module: taskstack.celery.celery_drain
"""

EXAMPLES = r"""
- name: Ask the blue default pool what it is doing
  taskstack.celery.celery_worker_info:
    app: proj
    app_dir: /srv/proj/current
    venv: /srv/proj/venv
    environment_file: /etc/celery/proj.env
    run_as: celery
    nodes:
      - default-blue@{{ ansible_facts['hostname'] }}
  register: __celery_workers

- name: Fail unless the new node answers and consumes its queues
  ansible.builtin.assert:
    that:
      - __celery_workers.unanswered | length == 0
      - "'default' in __celery_workers.nodes[__node].queues"
    fail_msg: "{{ __node }} does not answer or does not consume 'default'"
  vars:
    __node: default-blue@{{ ansible_facts['hostname'] }}
"""

RETURN = r"""
nodes:
  description:
    - What each asked node answered, keyed by nodename. Every fact the node did not answer is
      V(null). Keys of facts that were not asked for are absent.
  returned: success
  type: dict
  contains:
    answered:
      description: The node answered every fact asked.
      type: bool
    unanswered_facts:
      description: Facts this node did not answer.
      type: list
      elements: str
    ping:
      description: The node answered ping with pong.
      type: bool
    stats:
      description: Selected worker statistics, or V(null).
      type: dict
      contains:
        pid:
          description: PID of the worker's main process.
          type: int
        concurrency:
          description: Pool size (C(max-concurrency)).
          type: int
        pool:
          description: Pool implementation.
          type: str
        processes:
          description: PIDs of the pool's child processes.
          type: list
          elements: int
        prefetch_count:
          description: Current prefetch count.
          type: int
        uptime:
          description: Seconds since the worker started.
          type: int
        total:
          description: Tasks run since start, by task name.
          type: dict
    active:
      description: Tasks executing now (id, name, time_start, worker_pid), or V(null).
      type: list
      elements: dict
    active_count:
      description: Length of RV(nodes.active), or V(null).
      type: int
    reserved:
      description: Tasks prefetched and waiting for a pool slot (id, name), or V(null).
      type: list
      elements: dict
    reserved_count:
      description: Length of RV(nodes.reserved), or V(null).
      type: int
    scheduled:
      description: ETA/countdown tasks the node holds (id, name, eta), or V(null).
      type: list
      elements: dict
    scheduled_count:
      description: Length of RV(nodes.scheduled), or V(null).
      type: int
    queues:
      description: Names of the queues the node consumes, or V(null).
      type: list
      elements: str
    idle:
      description:
        - V(true) when the node answered empty active and reserved, V(false) when it holds
          tasks, V(null) when unknown. Present when both facts were asked.
      type: bool
  sample:
    default-blue@web1:
      answered: true
      unanswered_facts: []
      ping: true
      stats: {pid: 4242, concurrency: 4, pool: "celery.concurrency.prefork:TaskPool"}
      active: [{id: 0b1c5e2a-1f5e-4f7e-9f59-2f4b3d1a8c11, name: proj.tasks.resize}]
      active_count: 1
      reserved: []
      reserved_count: 0
      queues: [default]
      idle: false
unanswered:
  description: Asked nodes that did not answer every fact (their state is unknown).
  returned: success
  type: list
  elements: str
  sample: [default-green@web1]
ignored_replies:
  description: Nodes that answered without being asked (ignored).
  returned: success
  type: list
  elements: str
drained:
  description:
    - V(true) only when active and reserved were asked and every asked node answered both empty.
  returned: success
  type: bool
celery_version:
  description: Celery version in the app's virtualenv.
  returned: success
  type: str
  sample: 5.7.0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    INSPECT_FACTS,
    TARGET_ARGUMENT_SPEC,
    CeleryControlError,
    HelperTarget,
)


def argument_spec() -> dict:
    spec = dict(TARGET_ARGUMENT_SPEC)
    spec.update(
        nodes={"type": "list", "elements": "str", "required": True},
        facts={"type": "list", "elements": "str", "choices": list(INSPECT_FACTS),
               "default": ["ping", "stats", "active", "reserved", "active_queues"]},
        timeout={"type": "float", "default": 2.0},
    )
    return spec


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        target = HelperTarget.from_params(params)
        module.no_log_values.update(target.secrets)
        summary = target.inspect(params["nodes"], params["facts"], params["timeout"])
    except CeleryControlError as exc:
        module.fail_json(msg=str(exc), reason=exc.kind, helper_stderr=exc.detail)
    module.exit_json(changed=False, **summary)


if __name__ == "__main__":
    main()
