#!/usr/bin/python
# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: celery_queue_purge
short_description: Read one queue of a Celery app on Redis, or remove exactly the messages read
version_added: 0.1.0
description:
  - Without O(expect), reads every message of the queue O(queue) and of its kombu priority
    sub-queues (the keys the app's own Redis channel names) in one transaction, and returns
    them with a count and a sha256 per key. Changes nothing.
  - With O(expect) (the RV(digests) of a read), removes from each key exactly the messages read,
    in one C(WATCH)/C(MULTI) transaction, and only if the last C(count) messages of the key still hash to C(sha256) (kombu pushes new messages at the other
    end, so messages sent since the read stay). If a worker took some of them meanwhile, or a
    message was requeued, nothing is removed and the module fails.
  - Never C(FLUSHDB) or C(FLUSHALL), never a key other than the queue's.
  - Runs a helper with the app's virtualenv, in O(app_dir), with the variables of the worker
    units' EnvironmentFile, so it reaches the broker as the workers do, as the broker's Celery
    ACL user. No secret is put on a command line.
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
  queue:
    description:
      - The queue's name, as the app routes to it (V(celery), V(slow), ...).
    type: str
    required: true
  expect:
    description:
      - What was read and saved, by key, as the RV(digests) of a read gives it (C(count) and
        C(sha256) of each key; other fields are ignored). Given, the module removes exactly those
        messages.
    type: dict
  timeout:
    description:
      - Seconds to connect to the broker.
    type: float
    default: 5.0
notes:
  - The messages RV(keys) returns may hold task arguments, so register the result with C(no_log).
  - Not for a transport option C(global_keyprefix); the module refuses it.
seealso:
  - module: taskstack.celery.celery_worker_info
"""

EXAMPLES = r"""
- name: Read the queue 'mail' with its priority sub-queues
  taskstack.celery.celery_queue_purge:
    app: proj
    app_dir: /srv/proj/current
    venv: /srv/proj/venv
    environment_file: /etc/celery/proj.env
    run_as: celery
    queue: mail
  register: __saved
  no_log: true

- name: Remove exactly what was read (after saving it)
  taskstack.celery.celery_queue_purge:
    app: proj
    app_dir: /srv/proj/current
    venv: /srv/proj/venv
    environment_file: /etc/celery/proj.env
    run_as: celery
    queue: mail
    expect: "{{ __saved.digests }}"
"""

RETURN = r"""
keys:
  description:
    - By Redis key of the queue (the bare name for priority 0, then one per priority step).
      After a read, C(priority), C(count), C(sha256) and C(messages) (each C({body}) as text,
      or C({base64}) when not UTF-8; in list order, the next to be consumed last).
      After a removal, C(priority) and C(purged).
  returned: success
  type: dict
  sample: {"mail": {"priority": 0, "count": 1, "sha256": "9f8...", "messages": [{"body": "{...}"}]}}
digests:
  description:
    - Read only. By key, C(count) and C(sha256) without the messages; give it as O(expect) to remove
      exactly what was read.
  returned: success
  type: dict
  sample: {"mail": {"count": 1, "sha256": "9f8..."}}
total:
  description: Messages read, or removed (would be removed in check mode), over every key.
  returned: success
  type: int
"""

import inspect
import json
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.taskstack.celery.plugins.module_utils import celery_queue_program
from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    IMPORT_ALLOWANCE,
    TARGET_ARGUMENT_SPEC,
    CeleryControlError,
    HelperTarget,
    run_program,
    venv_python,
)


def argument_spec() -> dict:
    spec = dict(TARGET_ARGUMENT_SPEC)
    spec.update(
        queue={"type": "str", "required": True},
        expect={"type": "dict"},
        timeout={"type": "float", "default": 5.0},
    )
    return spec


def request_for(params: dict, check: bool) -> dict:
    expect = params.get("expect")
    if expect is not None:
        expect = {str(key): {"count": int(value["count"]), "sha256": str(value["sha256"])}
                  for key, value in expect.items()}
    return {"app": params["app"], "queue": params["queue"], "expect": expect, "check": check,
            "connect_timeout": params["timeout"]}


def run(target: HelperTarget, request: dict, runner=subprocess.run) -> dict:
    budget = IMPORT_ALLOWANCE + 2 * request["connect_timeout"] + 30
    program = "%s\n\nmain(%r, %r)\n" % (inspect.getsource(celery_queue_program), json.dumps(request), budget)
    return run_program(venv_python(target.venv), target.app_dir, target.env, program, budget + 5,
                       run_as=target.run_as, secrets=target.secrets, runner=runner)


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        target = HelperTarget.from_params(params)
        module.no_log_values.update(target.secrets)
        document = run(target, request_for(params, module.check_mode))
    except CeleryControlError as exc:
        module.fail_json(msg=str(exc), reason=exc.kind, helper_stderr=exc.detail)
    keys = document["keys"]
    if params.get("expect") is None:
        digests = {key: {"count": k["count"], "sha256": k["sha256"]} for key, k in keys.items()}
        module.exit_json(changed=False, keys=keys, digests=digests, total=sum(k["count"] for k in keys.values()))
    total = sum(k["purged"] for k in keys.values())
    module.exit_json(changed=total > 0, keys=keys, total=total)


if __name__ == "__main__":
    main()
