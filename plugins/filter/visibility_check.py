# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How long a message can stay unacknowledged at a worker, against the broker's visibility timeout.

With Redis as the broker, kombu keeps every message it delivers to a worker in the `unacked`
hash until the worker acknowledges it; one still there `visibility_timeout` seconds after its
delivery is delivered again, to any worker, and the task runs twice. A message is acknowledged
when its task ends (acks_late) or when it starts, so its time there is the time it waits behind
other messages plus, with acks_late, its own run. What Celery 5 does, from its source:

- A task's own hard limit (`@app.task(time_limit=...)`, or set by `task_annotations`) replaces
  the worker's `--time-limit` (Request.execute_using_pool: `time_limit or task.time_limit`).
- A worker holds at most P = prefetch_multiplier x concurrency unacknowledged messages (the
  autoscale maximum when it autoscales; `worker_disable_prefetch` holds it to the number of
  processes). They run R at a time (the processes; 1 for the solo pool), and a prefork worker
  gives a message only to an idle process (`-O fair`, the only strategy Celery 5's CLI offers).
  The last of P messages waits for ceil(P / R) - 1 rounds of at most T seconds each and runs
  at most T: **bound = ceil(P / R) x T**, T the longest hard limit of the pool's tasks. The
  same bound holds without acks_late (running tasks are acknowledged, but then P messages wait
  behind R running ones). The prefork and gevent pools enforce T; threads, solo and eventlet
  do not, and there the bound holds only if tasks end by themselves within T.
- A message with an ETA or countdown (a retry too) is delivered at once and held until its
  time: it waits E seconds, then behind up to P messages: **ETA bound = E + ceil(P / R) x T + T**.
  The collection cannot see the countdowns producers use: the user names the longest.

    {{ celery_app_config | taskstack.celery.visibility_check(celery_worker_pools, defaults, 0) }}
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

Number = Union[int, float]

# The Celery pools that do not enforce the hard time limit (their on_apply ignores it).
UNLIMITED_POOLS = ("threads", "solo", "eventlet")
# Where the visibility timeout is set, for the messages.
VT_SOURCE = "the app's broker_transport_options"


def seconds(value: Number) -> str:
    """3600 -> '3600 s', 2.5 -> '2.5 s'."""
    amount = float(value)
    return f"{int(amount)} s" if amount.is_integer() else f"{amount:g} s"


def number(value: Any) -> Number:
    """A limit as a number: inventory values given with -e arrive as strings."""
    result = float(value)
    return int(result) if result.is_integer() else result


def pool_setting(pool: Mapping[str, Any], defaults: Mapping[str, Any], key: str) -> Any:
    """A pool's own value for `key`, or the role-wide one (celery_worker_<key>)."""
    return pool[key] if pool.get(key) is not None else defaults.get(key)


def setting_name(pool: Mapping[str, Any], key: str) -> str:
    """The inventory variable a pool's value comes from, as the user would look for it."""
    if pool.get(key) is not None:
        return f"celery_worker_pools[{pool.get('name')}].{key}"
    return f"celery_worker_{key}"


def disables_prefetch(extra_args: Sequence[Any]) -> bool:
    """`--disable-prefetch` (a flag, Celery 5.6 and later) among a pool's extra arguments."""
    return "--disable-prefetch" in [str(arg) for arg in extra_args]


def processes(pool: Mapping[str, Any], defaults: Mapping[str, Any]) -> int:
    """How many of the pool's tasks run at once: the autoscale maximum (the autoscaler grows the
    pool as soon as messages wait), else the concurrency; 1 for the solo pool."""
    if pool_setting(pool, defaults, "pool") == "solo":
        return 1
    return max(reserving_processes(pool, defaults), 1)


def reserving_processes(pool: Mapping[str, Any], defaults: Mapping[str, Any]) -> int:
    """The process count the worker multiplies by the prefetch multiplier (components.Consumer)."""
    autoscale = str(pool_setting(pool, defaults, "autoscale") or "")
    if autoscale:
        return int(autoscale.split(",", maxsplit=1)[0])
    return int(pool_setting(pool, defaults, "concurrency"))


def longest_task(pool_limit: Number, task_limits: Mapping[str, Optional[Number]]) -> Dict[str, Any]:
    """The longest hard limit a task can run under in a pool: each task's own limit, or the pool's
    for a task without one (None or 0: Celery falls back to the worker's --time-limit)."""
    longest: Dict[str, Any] = {"limit": pool_limit, "task": None}
    for name, own in sorted(task_limits.items()):
        if own and number(own) > longest["limit"]:
            longest = {"limit": number(own), "task": name}
    return longest


def timeout_text(visibility: Number) -> str:
    return f"the broker's visibility_timeout of {seconds(visibility)} ({VT_SOURCE})"


def prefetch_count(pool: Mapping[str, Any], defaults: Mapping[str, Any],
                   app_config: Mapping[str, Any]) -> Dict[str, Any]:
    """P, the messages a pool's worker holds unacknowledged, and how it is made up; count None
    when the multiplier is 0 (no limit)."""
    reserving = max(reserving_processes(pool, defaults), 1)
    extra = list(defaults.get("extra_args") or []) + list(pool.get("extra_args") or [])
    if app_config.get("worker_disable_prefetch") or disables_prefetch(extra):
        return {"count": reserving, "variable": "worker_disable_prefetch",
                "text": f"P = {reserving}: worker_disable_prefetch holds one message per process"}
    multiplier = int(pool_setting(pool, defaults, "prefetch_multiplier") or 0)
    variable = setting_name(pool, "prefetch_multiplier")
    if not multiplier:
        # `--prefetch-multiplier=0` falls back to the app's setting (celery/bin/worker.py).
        multiplier = int(app_config.get("worker_prefetch_multiplier") or 0)
        variable += " (0: the app's worker_prefetch_multiplier)"
    if not multiplier:
        return {"count": None, "variable": variable, "text": ""}
    scaled = pool_setting(pool, defaults, "autoscale")
    processes_name = setting_name(pool, "autoscale") + " maximum" if scaled else setting_name(pool, "concurrency")
    return {"count": multiplier * reserving, "variable": variable,
            "text": f"P = {variable} {multiplier} x {processes_name} {reserving} messages reserved"}


def check_pool(pool: Mapping[str, Any], defaults: Mapping[str, Any], app_config: Mapping[str, Any],
               eta: Number, problems: List[str], notes: List[str]) -> Dict[str, Any]:
    """One pool's bounds; appends what is wrong to `problems`, what the bound assumes to `notes`."""
    name = pool.get("name")
    visibility = number(app_config["visibility_timeout"])
    longest = longest_task(number(pool_setting(pool, defaults, "time_limit")), app_config["task_time_limits"] or {})
    limit = longest["limit"]
    running = processes(pool, defaults)
    prefetch = prefetch_count(pool, defaults, app_config)
    report: Dict[str, Any] = {"name": name, "time_limit": limit, "longest_task": longest["task"],
                              "processes": running, "prefetch": prefetch["count"], "bound": None,
                              "eta_bound": None, "longest_safe_eta": None}
    limit_name = setting_name(pool, "time_limit")
    if prefetch["count"] is None:
        problems.append(
            f"Pool '{name}': the prefetch multiplier is 0 ({prefetch['variable']}), so the worker reserves "
            f"every message of its queues and one can wait unacknowledged longer than "
            f"{timeout_text(visibility)}, then run twice. Set {setting_name(pool, 'prefetch_multiplier')} to 1.")
        return report

    rounds = math.ceil(prefetch["count"] / running)
    bound = rounds * limit
    eta_bound = eta + bound + limit
    report.update(bound=bound, eta_bound=eta_bound if eta else None,
                  longest_safe_eta=max(math.ceil(visibility - bound - limit) - 1, 0))
    limit_text = (f"task '{longest['task']}' has its own time_limit of {seconds(limit)}"
                  if longest["task"] else f"{limit_name} is {seconds(limit)}")
    if limit >= visibility:
        if longest["task"] is None:  # a task's own limit is reported once, for every pool
            problems.append(
                f"Pool '{name}': {limit_name} is {seconds(limit)}, not below {timeout_text(visibility)}: "
                f"with acks_late, Redis hands a task that runs longer to a second worker and it runs "
                f"twice. Lower {limit_name} or raise visibility_timeout.")
    elif bound >= visibility:
        problems.append(
            f"Pool '{name}': a message it reserves can stay unacknowledged up to ceil(P / R) x T = "
            f"ceil({prefetch['count']} / {running}) x {seconds(limit)} = {seconds(bound)} ({prefetch['text']}; "
            f"R = {running} running at once; T = the longest hard limit: {limit_text}), not below "
            f"{timeout_text(visibility)}: a message still waiting behind the others is handed to a "
            f"second worker and runs twice. Lower {prefetch['variable']}, the concurrency or the time "
            f"limits, or raise visibility_timeout.")
    elif eta and eta_bound >= visibility:
        problems.append(
            f"Pool '{name}': celery_worker_max_eta_seconds is {seconds(eta)}; a task with that "
            f"countdown/ETA is held unacknowledged until it is due, then waits and runs: E + ceil(P / R) "
            f"x T + T = {seconds(eta)} + {seconds(bound)} + {seconds(limit)} = {seconds(eta_bound)} "
            f"(T: {limit_text}), not below {timeout_text(visibility)}: it is delivered again and runs "
            f"twice. The longest countdown this pool can take is {seconds(report['longest_safe_eta'])}: "
            f"use shorter countdowns, or raise visibility_timeout above {seconds(eta_bound)}.")
    kind = pool_setting(pool, defaults, "pool")
    if kind in UNLIMITED_POOLS:
        notes.append(
            f"Pool '{name}' runs the {kind} pool, which does not enforce hard time limits: its bound of "
            f"{seconds(bound)} holds only if every task ends within {seconds(limit)} by itself.")
    return report


def unavailable(reason: str) -> Dict[str, Any]:
    return {"checked": False, "reason": reason, "problems": [], "notes": [], "pools": []}


def visibility_check(
    app_config: Optional[Mapping[str, Any]],
    pools: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Any],
    max_eta_seconds: Number = 0,
) -> Dict[str, Any]:
    """Every way a message of these pools can outstay the broker's visibility timeout.

    `app_config` is what the celery role's probe read from the loaded app (celery_app_config);
    `pools` is celery_worker_pools; `defaults` holds the role-wide values of the keys a pool may
    override (concurrency, pool, time_limit, prefetch_multiplier, autoscale, extra_args);
    `max_eta_seconds` the longest countdown/ETA the app uses (0: it uses none).
    Returns checked (false with a reason when the app's settings are unknown), problems (each
    names the variable, its value, the task and the limit), notes, and per pool the bounds.
    """
    if app_config is None:
        return unavailable(
            "celery_app_config is not set: the celery role's configure step did not run in this "
            "play (taskstack.celery.celery must run before the worker role; --tags or "
            "--start-at-task may have skipped it)")
    if app_config.get("unavailable"):
        return unavailable(str(app_config["unavailable"]))
    if app_config.get("visibility_timeout") is None:
        return unavailable("celery_app_config holds no visibility_timeout (the app was not probed)")
    if "task_time_limits" not in app_config:
        return unavailable("celery_app_config holds no task_time_limits (it comes from an older probe)")

    visibility = number(app_config["visibility_timeout"])
    task_limits: Mapping[str, Optional[Number]] = app_config["task_time_limits"] or {}
    eta = number(max_eta_seconds or 0)
    problems: List[str] = []
    notes: List[str] = []
    reports: List[Dict[str, Any]] = []

    for name, own in sorted(task_limits.items()):
        if own and number(own) >= visibility:
            problems.append(
                f"Task '{name}' has its own time_limit of {seconds(own)} (@app.task(time_limit=...) "
                f"or task_annotations; it replaces the worker's celery_worker_time_limit), not below "
                f"{timeout_text(visibility)}: with acks_late, Redis hands it to a second worker while it "
                f"still runs. Lower the task's time_limit or raise visibility_timeout.")

    for pool in pools:
        reports.append(check_pool(pool, defaults, app_config, eta, problems, notes))

    return {"checked": True, "reason": "", "visibility_timeout": visibility, "max_eta_seconds": eta,
            "problems": problems, "notes": notes, "pools": reports}


class FilterModule:
    """The broker visibility-timeout check of the worker pools."""

    def filters(self) -> Dict[str, Any]:
        return {"visibility_check": visibility_check}
