# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drain Celery workers: cancel their consumers, then wait until they hold no task.

An action plugin, not a module, because the wait must print progress while it runs (a module
can only answer at its end) and because each poll is a short module run rather than one
module sitting on the host for a minute. Documented in plugins/modules/celery_drain.py.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.taskstack.celery.plugins.module_utils.celery_control import (
    TARGET_ARGUMENT_SPEC,
    CeleryControlError,
    wait_until_idle,
)

display = Display()

WORKER_INFO = "taskstack.celery.celery_worker_info"
CONSUMER = "taskstack.celery.celery_consumer"


def argument_spec() -> dict[str, dict[str, Any]]:
    spec = dict(TARGET_ARGUMENT_SPEC)
    spec.update(
        nodes={"type": "list", "elements": "str", "required": True},
        timeout={"type": "float", "default": 60.0},
        poll_interval={"type": "float", "default": 2.0},
        reply_timeout={"type": "float", "default": 2.0},
    )
    return spec


def _tasks_held(summary: Mapping[str, Any], nodes: Sequence[str]) -> list[dict[str, Any]]:
    held = []
    for node in nodes:
        info = summary["nodes"].get(node) or {}
        for state in ("active", "reserved"):
            held.extend(dict(t, node=node, state=state) for t in info.get(state) or [])
    return held


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(argument_spec())

    def run(self, tmp: Optional[str] = None, task_vars: Optional[dict] = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        _validation, args = self.validate_argument_spec(argument_spec=argument_spec())
        host = task_vars.get("inventory_hostname", "?")
        nodes = list(dict.fromkeys(args["nodes"]))
        target = {name: args[name] for name in TARGET_ARGUMENT_SPEC}
        reply_timeout = args["reply_timeout"]

        def say(line: str) -> None:
            display.display("celery_drain [%s] %s" % (host, line))

        result.update(drained=False, seconds=0.0, cancelled_queues={}, still_running=[],
                      unanswered=[])
        if not nodes:
            result.update(failed=True, msg="nodes is empty: refusing to drain without a "
                          "destination, which would reach every worker of the broker")
            return result

        before = self._run(WORKER_INFO, task_vars, target, nodes=nodes,
                           facts=["active_queues", "active", "reserved"], timeout=reply_timeout)
        if before.get("failed"):
            result.update(failed=True, msg="cannot ask %s: %s" % (", ".join(nodes), before.get("msg")),
                          reason=before.get("reason"))
            return result
        if before["unanswered"]:
            result.update(failed=True, unanswered=before["unanswered"],
                          msg="%s did not answer within %s s; their state is unknown, nothing was "
                          "cancelled (running? nodenames must match exactly)"
                          % (", ".join(before["unanswered"]), reply_timeout))
            return result
        queues = {node: before["nodes"][node]["queues"] for node in nodes}

        if self._task.check_mode:
            for node in nodes:
                say("%s: would stop consuming %s" % (node, ", ".join(queues[node]) or "nothing"))
            result.update(changed=any(queues.values()), cancelled_queues=queues,
                          drained=bool(before["drained"]),
                          still_running=_tasks_held(before, nodes))
            return result

        cancelled: dict[str, list] = {node: [] for node in nodes}
        result["cancelled_queues"] = cancelled
        for node in nodes:
            if not queues[node]:
                say("%s: consumes no queue already" % node)
                continue
            answer = self._run(CONSUMER, task_vars, target, node=node, queues=queues[node],
                               state="absent", timeout=reply_timeout)
            cancelled[node] = list(answer.get("cancelled") or [])
            if cancelled[node]:
                result["changed"] = True
            if answer.get("failed"):
                result.update(failed=True, msg="cancelling the consumers of %s failed: %s"
                              % (node, answer.get("msg")))
                return result
            say("%s: stopped consuming %s" % (node, ", ".join(cancelled[node])))

        def poll(asked: Sequence[str], timeout: float) -> Mapping[str, Any]:
            answer = self._run(WORKER_INFO, task_vars, target, nodes=list(asked),
                               facts=["active", "reserved"], timeout=timeout)
            if answer.get("failed"):
                raise CeleryControlError(str(answer.get("msg")), kind=str(answer.get("reason")))
            return answer

        outcome = wait_until_idle(nodes, poll, timeout=args["timeout"],
                                  poll_interval=args["poll_interval"],
                                  reply_timeout=reply_timeout, progress=say)
        say("%s after %.1f s" % ("drained" if outcome["drained"] else
                                 "NOT drained (timeout or no reply)", outcome["seconds"]))
        result.update(outcome)
        return result

    def _run(self, module: str, task_vars: dict, target: Mapping[str, Any],
             **module_args: Any) -> dict[str, Any]:
        return self._execute_module(module_name=module, module_args=dict(target, **module_args),
                                    task_vars=task_vars)
