#!/usr/bin/python
# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# The work is done by the action plugin of the same name (plugins/action/celery_drain.py) on
# the controller, which calls celery_worker_info and celery_consumer on the host. This file
# only documents it.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: celery_drain
short_description: Stop Celery workers taking tasks and wait until they finished what they hold
version_added: 0.1.0
description:
  - For each node of O(nodes), reads the queues it consumes (C(inspect active_queues)) and
    cancels consuming every one of them (C(cancel_consumer)), with
    M(taskstack.celery.celery_consumer). Then polls C(active) and C(reserved) with
    M(taskstack.celery.celery_worker_info) every O(poll_interval) seconds until every node
    answered both empty in the same poll, or O(timeout) seconds passed.
  - Prints one progress line per node and poll in the Ansible output (tasks still running, with
    names and ids, and seconds left), so a CI log shows what the deploy waits for.
  - A node that does not answer a poll is unknown, never drained. RV(drained) is V(true) only
    when every node answered with nothing active or reserved.
  - Reaching O(timeout) is not a failure; RV(drained) is V(false) and RV(still_running) lists
    what still runs, so the play can decide to force (for example a cold shutdown).
  - It fails when a node does not answer before anything is cancelled, or when cancelling
    fails; RV(cancelled_queues) then says what was already cancelled, so a C(rescue) can give
    the queues back with M(taskstack.celery.celery_consumer) O(taskstack.celery.celery_consumer#module:state=present).
  - ETA/countdown tasks a node holds (C(inspect scheduled)) are not waited for; a warm
    shutdown puts them back on the queue.
  - In check mode it reads the queues and tasks, reports what it would cancel in
    RV(cancelled_queues), and sends no control command.
author:
  - taskstack.celery maintainers (@taskstack)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - taskstack.celery.celery_target
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  nodes:
    description:
      - Exact nodenames of the workers to drain, for example V(default-blue@web1).
    type: list
    elements: str
    required: true
  timeout:
    description:
      - Seconds to wait, after cancelling, for active and reserved tasks to finish.
    type: float
    default: 60
  poll_interval:
    description:
      - Seconds between two polls.
    type: float
    default: 2
  reply_timeout:
    description:
      - Seconds to wait for the replies of each inspect or control request.
    type: float
    default: 2
seealso:
  - module: taskstack.celery.celery_worker_info
  - module: taskstack.celery.celery_consumer
"""

EXAMPLES = r"""
- name: Drain the blue pools, then stop them
  block:
    - name: Stop consuming and wait for running tasks
      taskstack.celery.celery_drain:
        app: proj
        app_dir: /srv/proj/current
        venv: /srv/proj/venv
        environment_file: /etc/celery/proj.env
        run_as: celery
        nodes:
          - default-blue@{{ ansible_facts['hostname'] }}
        timeout: 60
      register: __celery_drain

    - name: Report what is forced
      ansible.builtin.debug:
        msg: "still running at timeout: {{ __celery_drain.still_running }}"
      when: not __celery_drain.drained
  rescue:
    - name: Give the queues back
      taskstack.celery.celery_consumer:
        app: proj
        app_dir: /srv/proj/current
        venv: /srv/proj/venv
        environment_file: /etc/celery/proj.env
        run_as: celery
        node: "{{ item.key }}"
        queues: "{{ item.value }}"
        state: present
      loop: "{{ __celery_drain.cancelled_queues | default({}) | dict2items }}"
      when: item.value | length > 0
"""

RETURN = r"""
drained:
  description:
    - V(true) when every node answered, in the same poll, that nothing is active or reserved.
    - V(false) at timeout or when a node did not answer. In check mode, whether the nodes are
      idle now.
  returned: always
  type: bool
seconds:
  description: Seconds spent waiting after cancelling (0 in check mode).
  returned: always
  type: float
  sample: 7.412
polls:
  description: How many times the nodes were asked.
  returned: success
  type: int
cancelled_queues:
  description:
    - Queues cancelled, by node (in check mode, the queues that would be cancelled). Give them
      back with M(taskstack.celery.celery_consumer) O(taskstack.celery.celery_consumer#module:state=present) to undo.
  returned: always
  type: dict
  sample: {default-blue@web1: [default, mail]}
waited_for:
  description: Every task seen active or reserved while waiting (node, id, name).
  returned: success
  type: list
  elements: dict
  sample: [{node: default-blue@web1, id: 0b1c5e2a-1f5e-4f7e-9f59-2f4b3d1a8c11, name: proj.tasks.resize}]
still_running:
  description:
    - Tasks active or reserved at the last poll (node, id, name, state V(active) or
      V(reserved)); empty when drained. In check mode, the tasks the nodes hold now.
  returned: always
  type: list
  elements: dict
unanswered:
  description: Nodes that did not answer the last poll (state unknown).
  returned: always
  type: list
  elements: str
errors:
  description: Polls that got no usable answer at all (broker unreachable, helper failed).
  returned: success
  type: list
  elements: str
nodes:
  description: By node, C(idle) (bool or V(null) when unknown), C(waited_for) and C(still_running).
  returned: success
  type: dict
"""
