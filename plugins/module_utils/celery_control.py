# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ask Celery workers what they are doing, and tell them which queues to consume.

The Ansible modules run with the system python of the managed host, which has no Celery. The
app's own virtualenv has it, and only the app knows its broker settings, so a small helper
program (celery_control_program.py) runs inside that venv: `<venv>/bin/python -` with the app
directory as working directory, the unit's EnvironmentFile variables as environment, and the
program followed by the call with its JSON request on stdin. Nothing secret is ever on a
command line or on stdin.

What the workers answered is interpreted here, with the rules a deploy depends on:
- a node that did not reply is unknown, never idle or drained;
- replies from nodes that were not asked are ignored;
- a control command always names its nodes: an empty destination would broadcast to every
  worker of the broker, so it is refused.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from ansible_collections.taskstack.celery.plugins.module_utils import celery_control_program
from ansible_collections.taskstack.celery.plugins.module_utils.celery_environment import redact

INSPECT_FACTS = ("ping", "stats", "active", "reserved", "scheduled", "active_queues")
CONTROL_COMMANDS = ("add_consumer", "cancel_consumer")
# Seconds granted to the helper for starting python and importing the app (Django apps are slow).
IMPORT_ALLOWANCE = 30.0
CONNECT_TIMEOUT = 5.0
# A nodename is matched exactly by the workers; these characters would make it a pattern.
_PATTERN_CHARACTERS = set("*?[]")


class CeleryControlError(Exception):
    """The helper gave no usable answer: app not loadable, broker unreachable, timeout, ...

    kind is a short machine-readable reason (app_not_loadable, broker_unreachable, timeout,
    helper_failed, bad_request); the message is meant for a person and holds no secret.
    """

    def __init__(self, message: str, kind: str = "helper_failed", detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail


# --------------------------------------------------------------------------------------------
# The request and the program that runs inside the app's venv
# --------------------------------------------------------------------------------------------


def validate_nodes(nodes: Iterable[str]) -> list[str]:
    """Exact nodenames, at least one, no duplicates kept. Refuses what would broadcast."""
    result: list[str] = []
    for node in nodes:
        if not isinstance(node, str) or not node.strip():
            raise CeleryControlError("a nodename must be a non-empty string, got %r" % (node,),
                                     kind="bad_request")
        if node != node.strip() or _PATTERN_CHARACTERS & set(node):
            raise CeleryControlError(
                "nodename %r is not an exact name (whitespace or pattern characters); workers "
                "match nodenames exactly, e.g. default-blue@web1" % node, kind="bad_request")
        if node not in result:
            result.append(node)
    if not result:
        raise CeleryControlError(
            "no nodes given: refusing to send a command without a destination, which would "
            "reach every worker of the broker", kind="bad_request")
    return result


def build_request(app: str, nodes: Iterable[str], timeout: float,
                  inspect: Sequence[str] = (), control: Sequence[Mapping[str, str]] = (),
                  await_queues: Optional[Mapping[str, Any]] = None,
                  connect_timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """The JSON request the helper program executes, validated.

    inspect: facts to gather (INSPECT_FACTS), in order.
    control: [{"command": "cancel_consumer"|"add_consumer", "queue": name}], sent to all nodes.
    await_queues: {"present": {node: [queue]}, "absent": {node: [queue]}, "within": seconds}:
      after the control commands, re-read active_queues until it shows this or time is up
      (workers apply add/cancel_consumer after they replied, so a reply alone proves nothing).
    """
    if not app or not isinstance(app, str):
        raise CeleryControlError("app (the celery -A value) is required", kind="bad_request")
    if timeout <= 0:
        raise CeleryControlError("timeout must be positive", kind="bad_request")
    unknown = [fact for fact in inspect if fact not in INSPECT_FACTS]
    if unknown:
        raise CeleryControlError("unknown inspect facts %s; known: %s"
                                 % (unknown, ", ".join(INSPECT_FACTS)), kind="bad_request")
    commands = []
    for item in control:
        if item.get("command") not in CONTROL_COMMANDS or not item.get("queue"):
            raise CeleryControlError("bad control command %r" % (dict(item),), kind="bad_request")
        commands.append({"command": item["command"], "queue": str(item["queue"])})
    request: dict[str, Any] = {
        "app": app,
        "nodes": validate_nodes(nodes),
        "timeout": float(timeout),
        "connect_timeout": float(connect_timeout),
        "inspect": list(inspect),
        "control": commands,
        "await_queues": None,
    }
    if await_queues:
        request["await_queues"] = {
            "present": {n: list(q) for n, q in (await_queues.get("present") or {}).items()},
            "absent": {n: list(q) for n, q in (await_queues.get("absent") or {}).items()},
            "within": float(await_queues.get("within", timeout)),
        }
    return request


def helper_time_budget(request: Mapping[str, Any]) -> float:
    """Seconds the whole helper run may take before it is killed."""
    calls = len(request["inspect"]) + len(request["control"])
    budget = IMPORT_ALLOWANCE + request["connect_timeout"] + calls * request["timeout"]
    if request.get("await_queues"):
        budget += request["await_queues"]["within"] + request["timeout"]
    return budget


def program_source() -> str:
    """The text of celery_control_program.py, from wherever this collection was loaded.

    inspect.getsource asks the module's loader, so it also works inside the zip Ansible ships a
    module in (the import above is what puts the file into that zip).
    """
    return inspect.getsource(celery_control_program)


def helper_program(request: Mapping[str, Any]) -> str:
    """What `<venv>/bin/python -` reads on stdin: the program, then the call that runs it.

    The request (app, nodes, timeouts; no secret) is a JSON string literal, never code.
    """
    call = "main(%r, %r)" % (json.dumps(request), helper_time_budget(request))
    return "%s\n\n%s\n" % (program_source(), call)


def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def _run_as_arguments(run_as: Optional[str]) -> dict[str, Any]:
    """subprocess arguments that drop to run_as (and its primary group only)."""
    if not run_as:
        return {}
    import pwd  # POSIX only; imported here so the rest stays importable anywhere

    entry = pwd.getpwnam(run_as)
    if os.geteuid() == entry.pw_uid:
        return {}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def run_helper(python: str, app_dir: str, env: Mapping[str, str], request: Mapping[str, Any],
               run_as: Optional[str] = None, secrets: Sequence[str] = (),
               runner: Callable[..., Any] = subprocess.run) -> dict[str, Any]:
    """Run the helper in the app's venv and return its parsed answer.

    Raises CeleryControlError when it gives no usable answer; messages are redacted with secrets.
    """
    # The helper's own alarm fires first.
    return run_program(python, app_dir, env, helper_program(request), helper_time_budget(request) + 5.0,
                       run_as=run_as, secrets=secrets, runner=runner)


def run_program(python: str, app_dir: str, env: Mapping[str, str], program: str, budget: float,
                run_as: Optional[str] = None, secrets: Sequence[str] = (),
                runner: Callable[..., Any] = subprocess.run) -> dict[str, Any]:
    """Run a helper program (Python source on stdin) in the app's venv, killed after budget
    seconds, and return its answer: the JSON object on its last line, whose "ok" must be true.

    Raises CeleryControlError when it gives no usable answer; messages are redacted with secrets.
    """
    try:
        proc = runner([python, "-"], input=program, cwd=app_dir, env=dict(env),
                      capture_output=True, text=True, timeout=budget, check=False,
                      **_run_as_arguments(run_as))
    except subprocess.TimeoutExpired:
        raise CeleryControlError("the helper in %s did not finish within %.0f s and was killed"
                                 % (python, budget), kind="timeout")
    except OSError as exc:
        raise CeleryControlError("cannot run %s: %s" % (python, exc.strerror or exc),
                                 kind="helper_failed")
    stderr = redact(proc.stderr or "", list(secrets))
    lines = [line for line in (proc.stdout or "").splitlines() if line.strip()]
    try:
        document = json.loads(lines[-1]) if lines else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise CeleryControlError("the helper in %s exited %s without an answer"
                                 % (python, proc.returncode),
                                 kind="helper_failed", detail=stderr[-4000:])
    if not document.get("ok"):
        raise CeleryControlError(redact(str(document.get("message")), list(secrets)),
                                 kind=str(document.get("error", "helper_failed")),
                                 detail=stderr[-4000:])
    return document


# --------------------------------------------------------------------------------------------
# What the replies mean
# --------------------------------------------------------------------------------------------


def replies_by_node(reply: Any) -> dict[str, Any]:
    """{node: answer} from an inspect reply (dict or None) or a control reply (list of dicts)."""
    if not reply:
        return {}
    if isinstance(reply, Mapping):
        return dict(reply)
    merged: dict[str, Any] = {}
    for item in reply:
        if isinstance(item, Mapping):
            merged.update(item)
    return merged


def task_ref(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Id and name of a task from active/reserved/scheduled; args and kwargs are left out (PII)."""
    request = entry.get("request") if isinstance(entry.get("request"), Mapping) else entry
    ref: dict[str, Any] = {"id": request.get("id"), "name": request.get("name")}
    for key in ("time_start", "worker_pid"):
        if request.get(key) is not None:
            ref[key] = request[key]
    if entry.get("eta") is not None:
        ref["eta"] = entry["eta"]
    return ref


def _stats_summary(stats: Mapping[str, Any]) -> dict[str, Any]:
    pool = stats.get("pool") if isinstance(stats.get("pool"), Mapping) else {}
    return {
        "pid": stats.get("pid"),
        "concurrency": pool.get("max-concurrency"),
        "pool": pool.get("implementation"),
        "processes": list(pool.get("processes") or []),
        "prefetch_count": stats.get("prefetch_count"),
        "uptime": stats.get("uptime"),
        "total": dict(stats.get("total") or {}),
    }


def summarize_inspection(nodes: Sequence[str], inspect: Mapping[str, Any]) -> dict[str, Any]:
    """Per asked node, what it answered; None wherever it did not answer (unknown).

    Returns {"nodes": {node: {...}}, "unanswered": [...], "ignored_replies": [...],
    "drained": bool}. "drained" needs active and reserved gathered and every asked node to
    have answered both with nothing.
    """
    asked = list(nodes)
    by_fact = {fact: replies_by_node(reply) for fact, reply in inspect.items()}
    ignored = sorted({n for replies in by_fact.values() for n in replies} - set(asked))
    summary: dict[str, dict[str, Any]] = {}
    for node in asked:
        missing = [fact for fact, replies in by_fact.items() if node not in replies]
        info: dict[str, Any] = {"answered": not missing, "unanswered_facts": missing}
        if "ping" in by_fact:
            pong = by_fact["ping"].get(node)
            info["ping"] = isinstance(pong, Mapping) and pong.get("ok") == "pong"
        if "stats" in by_fact:
            stats = by_fact["stats"].get(node)
            info["stats"] = _stats_summary(stats) if isinstance(stats, Mapping) else None
        for fact in ("active", "reserved", "scheduled"):
            if fact in by_fact:
                entries = by_fact[fact].get(node)
                refs = [task_ref(e) for e in entries if isinstance(e, Mapping)] \
                    if isinstance(entries, list) else None
                info[fact] = refs
                info[fact + "_count"] = None if refs is None else len(refs)
        if "active_queues" in by_fact:
            queues = by_fact["active_queues"].get(node)
            info["queues"] = [q.get("name") for q in queues if isinstance(q, Mapping)] \
                if isinstance(queues, list) else None
        if "active" in by_fact and "reserved" in by_fact:
            if info["active"] is None or info["reserved"] is None:
                info["idle"] = None
            else:
                info["idle"] = not info["active"] and not info["reserved"]
        summary[node] = info
    drained = ("active" in by_fact and "reserved" in by_fact
               and all(summary[n].get("idle") is True for n in asked))
    return {
        "nodes": summary,
        "unanswered": [n for n in asked if not summary[n]["answered"]],
        "ignored_replies": ignored,
        "drained": drained,
    }


def consumer_commands(current: Iterable[str], queues: Iterable[str], state: str) -> list[dict[str, str]]:
    """The add/cancel_consumer commands that bring a node from current to the wanted state."""
    consumed = set(current)
    if state == "present":
        return [{"command": "add_consumer", "queue": q}
                for q in _unique(queues) if q not in consumed]
    if state == "absent":
        return [{"command": "cancel_consumer", "queue": q}
                for q in _unique(queues) if q in consumed]
    raise CeleryControlError("state must be present or absent, got %r" % state, kind="bad_request")


def control_outcome(node: str, replies: Any) -> tuple[str, Optional[str]]:
    """("ok"|"error"|"no_reply", worker's message) of one control command for one node."""
    answer = replies_by_node(replies).get(node)
    if not isinstance(answer, Mapping):
        return "no_reply", None
    if "error" in answer:
        return "error", str(answer["error"])
    return "ok", str(answer.get("ok", ""))


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


# --------------------------------------------------------------------------------------------
# Waiting for nodes that no longer consume to finish what they hold
# --------------------------------------------------------------------------------------------

Poll = Callable[[Sequence[str], float], Mapping[str, Any]]


def _describe_tasks(tasks: Sequence[Mapping[str, Any]], limit: int = 5) -> str:
    shown = ["%s[%s]" % (t.get("name"), t.get("id")) for t in tasks[:limit]]
    if len(tasks) > limit:
        shown.append("+%d more" % (len(tasks) - limit))
    return ", ".join(shown)


def progress_line(node: str, info: Optional[Mapping[str, Any]], seconds_left: float) -> str:
    """One human line per node and poll, for a CI log."""
    left = "%ds left" % max(0, round(seconds_left))
    if info is None or info.get("idle") is None:
        return "%s: no reply (unknown, not counted as drained), %s" % (node, left)
    if info["idle"]:
        return "%s: drained, nothing active or reserved" % node
    active = info.get("active") or []
    reserved = info.get("reserved") or []
    parts = []
    if active:
        parts.append("%d running: %s" % (len(active), _describe_tasks(active)))
    if reserved:
        parts.append("%d reserved: %s" % (len(reserved), _describe_tasks(reserved)))
    return "%s: %s; %s" % (node, "; ".join(parts), left)


def wait_until_idle(nodes: Sequence[str], poll: Poll, timeout: float, poll_interval: float,
                    reply_timeout: float, progress: Callable[[str], None] = lambda line: None,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll active+reserved of nodes until all answered empty in the same poll, or timeout.

    poll(nodes, reply_timeout) returns summarize_inspection() of active and reserved, or raises
    CeleryControlError (then that poll counts as no reply from anyone). Always polls at least
    once. Returns drained, seconds, polls, waited_for, still_running, unanswered, errors, nodes.
    """
    asked = validate_nodes(nodes)
    start = clock()
    deadline = start + timeout
    waited_for: dict[tuple[str, Any], dict[str, Any]] = {}
    errors: list[str] = []
    polls = 0
    last: dict[str, Any] = {"nodes": {}, "drained": False}
    while True:
        remaining = deadline - clock()
        polls += 1
        try:
            last = dict(poll(asked, max(0.5, min(reply_timeout, remaining))))
        except CeleryControlError as exc:
            errors.append(str(exc))
            progress("poll %d: %s" % (polls, exc))
            last = {"nodes": {}, "drained": False}
        seconds_left = deadline - clock()
        for node in asked:
            info = last["nodes"].get(node)
            for state in ("active", "reserved"):
                for task in (info or {}).get(state) or []:
                    waited_for.setdefault((node, task.get("id")), {
                        "node": node, "id": task.get("id"), "name": task.get("name")})
            progress(progress_line(node, info, seconds_left))
        drained = bool(last.get("drained")) and all(
            (last["nodes"].get(n) or {}).get("idle") is True for n in asked)
        if drained or seconds_left <= 0:
            break
        sleep(min(poll_interval, seconds_left))
    still_running = []
    per_node: dict[str, dict[str, Any]] = {}
    for node in asked:
        info = last["nodes"].get(node) or {}
        running = [dict(t, node=node, state=state) for state in ("active", "reserved")
                   for t in info.get(state) or []]
        still_running.extend(running)
        per_node[node] = {
            "idle": info.get("idle"),
            "waited_for": [t for (n, _task_id), t in waited_for.items() if n == node],
            "still_running": running,
        }
    return {
        "drained": drained,
        "seconds": round(clock() - start, 3),
        "polls": polls,
        "waited_for": list(waited_for.values()),
        "still_running": still_running,
        "unanswered": [n for n in asked if per_node[n]["idle"] is None],
        "errors": errors,
        "nodes": per_node,
    }


# --------------------------------------------------------------------------------------------
# Where the helper runs: shared by the modules
# --------------------------------------------------------------------------------------------

# Options every module that talks to the workers takes. Kept here, without Ansible, so the
# modules and the celery_drain action plugin validate exactly the same way.
TARGET_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "app": {"type": "str", "required": True},
    "app_dir": {"type": "path", "required": True},
    "venv": {"type": "path", "required": True},
    "environment_file": {"type": "path"},
    "environment": {"type": "dict", "default": {}, "no_log": True},
    "run_as": {"type": "str"},
}


class HelperTarget:
    """The app, its venv and the environment the helper runs with."""

    def __init__(self, app: str, app_dir: str, venv: str, env: Mapping[str, str],
                 secrets: Sequence[str] = (), run_as: Optional[str] = None) -> None:
        self.app = app
        self.app_dir = app_dir
        self.venv = venv
        self.env = dict(env)
        self.secrets = list(secrets)
        self.run_as = run_as

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "HelperTarget":
        """Check the paths and read the EnvironmentFile; errors say what to change."""
        from ansible_collections.taskstack.celery.plugins.module_utils.celery_environment import (
            EnvironmentFileError, helper_process_environment, read_environment_file, secret_values)

        app_dir, venv = params["app_dir"], params["venv"]
        if not os.path.isdir(app_dir):
            raise CeleryControlError("app_dir %s is not a directory" % app_dir, kind="bad_request")
        python = venv_python(venv)
        if not os.access(python, os.X_OK):
            raise CeleryControlError("%s is missing or not executable: is venv the app's "
                                     "virtualenv?" % python, kind="bad_request")
        file_env: dict[str, str] = {}
        if params.get("environment_file"):
            try:
                file_env = read_environment_file(params["environment_file"])
            except OSError as exc:
                raise CeleryControlError("cannot read environment_file %s: %s"
                                         % (params["environment_file"], exc.strerror or exc),
                                         kind="bad_request")
            except EnvironmentFileError as exc:
                raise CeleryControlError("environment_file %s: %s"
                                         % (params["environment_file"], exc), kind="bad_request")
        extra = {str(k): str(v) for k, v in (params.get("environment") or {}).items()}
        home = None
        if params.get("run_as"):
            import pwd

            try:
                home = pwd.getpwnam(params["run_as"]).pw_dir
            except KeyError:
                raise CeleryControlError("run_as user %s does not exist" % params["run_as"],
                                         kind="bad_request")
        env = helper_process_environment(app_dir, file_env, extra, home=home)
        secrets = secret_values(dict(file_env, **extra))
        return cls(params["app"], app_dir, venv, env, secrets=secrets, run_as=params.get("run_as"))

    def run(self, request: Mapping[str, Any],
            runner: Callable[..., Any] = subprocess.run) -> dict[str, Any]:
        return run_helper(venv_python(self.venv), self.app_dir, self.env, request,
                          run_as=self.run_as, secrets=self.secrets, runner=runner)

    def inspect(self, nodes: Sequence[str], facts: Sequence[str], timeout: float,
                runner: Callable[..., Any] = subprocess.run) -> dict[str, Any]:
        """summarize_inspection() of the given facts, plus the helper's celery_version."""
        request = build_request(self.app, nodes, timeout, inspect=facts)
        document = self.run(request, runner=runner)
        summary = summarize_inspection(request["nodes"], document.get("inspect") or {})
        summary["celery_version"] = document.get("celery_version")
        return summary
