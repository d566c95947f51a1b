#!/usr/bin/python
# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: celery_consumer
short_description: Make one Celery worker consume, or stop consuming, given queues
version_added: 0.1.0
description:
  - Reads the queues the worker O(node) consumes (C(inspect active_queues)), then sends
    C(add_consumer) (O(state=present)) or C(cancel_consumer) (O(state=absent)) for the queues
    that differ, to that node only, and reads C(active_queues) again until it shows the change.
    Workers apply these commands after they replied, so only the second reading proves it.
  - Idempotent; C(changed) only when a command was sent.
  - In check mode, reads the queues and reports what it would change, and sends no command.
  - Fails when the node does not answer (its state is unknown) or when the change does not
    show within O(timeout); RV(added) and RV(cancelled) then tell what was sent.
  - Runs its helper like M(taskstack.celery.celery_worker_info), with the app's virtualenv.
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
  node:
    description:
      - Exact nodename of the worker, for example V(default-blue@web1).
    type: str
    required: true
  queues:
    description:
      - Queue names. With O(state=present) the node consumes each of them afterwards (queues it
        consumes besides these are left alone); with O(state=absent) it consumes none of them.
      - A queue that the worker's app defines (C(task_queues)) is added back with its own
        exchange and routing key; any other with a direct exchange and routing key of its name.
    type: list
    elements: str
    required: true
  state:
    description:
      - V(present) sends C(add_consumer), V(absent) sends C(cancel_consumer).
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description:
      - Seconds to wait for each reply; the change must show in C(active_queues) within
        twice this (at least 5 s).
    type: float
    default: 2.0
seealso:
  - module: taskstack.celery.celery_worker_info
  - module: taskstack.celery.celery_drain
"""

EXAMPLES = r"""
- name: Stop the blue default pool from taking new tasks
  taskstack.celery.celery_consumer:
    app: proj
    app_dir: /srv/proj/current
    venv: /srv/proj/venv
    environment_file: /etc/celery/proj.env
    run_as: celery
    node: default-blue@{{ ansible_facts['hostname'] }}
    queues: [default, mail]
    state: absent
  register: __celery_cancelled

- name: Put it back to work (the rescue of a failed deploy)
  taskstack.celery.celery_consumer:
    app: proj
    app_dir: /srv/proj/current
    venv: /srv/proj/venv
    environment_file: /etc/celery/proj.env
    run_as: celery
    node: default-blue@{{ ansible_facts['hostname'] }}
    queues: "{{ __celery_cancelled.cancelled }}"
    state: present
  when: __celery_cancelled.cancelled | default([]) | length > 0
"""

RETURN = r"""
node:
  description: The node that was asked.
  returned: always
  type: str
  sample: default-blue@web1
queues_before:
  description: Queues the node consumed before.
  returned: when the node answered
  type: list
  elements: str
  sample: [default, mail]
queues_after:
  description:
    - Queues the node consumes afterwards, as it answered; in check mode, as they would be.
  returned: when the node answered
  type: list
  elements: str
  sample: []
added:
  description: Queues C(add_consumer) was sent for (in check mode, would be sent for).
  returned: always
  type: list
  elements: str
  sample: []
cancelled:
  description: Queues C(cancel_consumer) was sent for (in check mode, would be sent for).
  returned: always
  type: list
  elements: str
  sample: [default, mail]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    TARGET_ARGUMENT_SPEC,
    CeleryControlError,
    HelperTarget,
    build_request,
    consumer_commands,
    control_outcome,
    replies_by_node,
)


def argument_spec() -> dict:
    spec = dict(TARGET_ARGUMENT_SPEC)
    spec.update(
        node={"type": "str", "required": True},
        queues={"type": "list", "elements": "str", "required": True},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        timeout={"type": "float", "default": 2.0},
    )
    return spec


def _names(queues: list) -> list:
    return [q.get("name") for q in queues if isinstance(q, dict)]


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    node, state, timeout = params["node"], params["state"], params["timeout"]
    result: dict = {"changed": False, "node": node, "added": [], "cancelled": []}
    try:
        target = HelperTarget.from_params(params)
        module.no_log_values.update(target.secrets)
        before = target.inspect([node], ["active_queues"], timeout)
        queues_before = before["nodes"][node]["queues"]
        if queues_before is None:
            module.fail_json(msg="node %s did not answer within %s s: its queues are unknown, "
                             "nothing was sent (is it running? nodenames must match exactly)"
                             % (node, timeout), reason="no_reply", **result)
        commands = consumer_commands(queues_before, params["queues"], state)
        sent_key = "added" if state == "present" else "cancelled"
        result.update({"queues_before": queues_before, sent_key: [c["queue"] for c in commands]})
        if not commands:
            module.exit_json(queues_after=queues_before, **result)
        result["changed"] = True
        if module.check_mode:
            changing = set(result[sent_key])
            predicted = (queues_before + result["added"]) if state == "present" else \
                [q for q in queues_before if q not in changing]
            module.exit_json(queues_after=predicted, **result)

        wanted = {node: [c["queue"] for c in commands]}
        request = build_request(
            params["app"], [node], timeout, control=commands,
            await_queues={state: wanted, "within": max(5.0, 2 * timeout)})
        document = target.run(request)
    except CeleryControlError as exc:
        module.fail_json(msg=str(exc), reason=exc.kind, helper_stderr=exc.detail, **result)

    errors = []
    for sent in document["control"]:
        status, message = control_outcome(node, sent["replies"])
        if status == "error":
            errors.append("%s %s: %s" % (sent["command"], sent["queue"], message))
        elif status == "no_reply":
            module.warn("%s did not reply to %s %s within %s s; checking its queues instead"
                        % (node, sent["command"], sent["queue"], timeout))
    after = document.get("after") or {}
    answer = replies_by_node(after.get("active_queues")).get(node)
    queues_after = _names(answer) if isinstance(answer, list) else None
    result["queues_after"] = queues_after
    if errors or not after.get("settled"):
        seen = "it did not answer active_queues" if queues_after is None else \
            "active_queues now shows %s" % queues_after
        module.fail_json(
            msg="%s did not %s %s as asked: %s" % (
                node, "consume" if state == "present" else "stop consuming",
                ", ".join(wanted[node]), "; ".join(errors + [seen])),
            reason="not_applied", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
