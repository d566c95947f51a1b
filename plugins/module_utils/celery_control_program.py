# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The program that asks Celery workers, run inside the app's virtualenv.

celery_control does not call these functions: it reads this file's text (inspect.getsource,
which also works inside the zip Ansible ships a module in), appends one line,
`main(<request as a JSON string>, <seconds>)`, and gives the whole to `<venv>/bin/python -` on
stdin, with the app directory as working directory and the unit's environment as environment.
Nothing secret is on its command line or in its text.

It needs nothing but Celery and Python 3.8, so it runs in any app venv, and imports Celery only
inside main: this file is importable anywhere, and its parts are unit-tested on their own.
It prints exactly one JSON document on stdout; whatever the app prints while it loads goes to
stderr, so it cannot corrupt the answer.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


class Failure(Exception):
    """An answer of {"ok": false}: kind is machine-readable, message meant for a person."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def load_app(name):
    """The Celery app, by the same lookup as `celery -A NAME` (module, module:attribute, ...)."""
    try:
        from celery.app.utils import find_app
    except Exception as exc:
        raise Failure("celery_missing", "cannot import celery in %s: %s: %s"
                      % (sys.prefix, type(exc).__name__, exc))
    try:
        return find_app(name)
    except BaseException as exc:  # an app may call sys.exit() while it loads
        raise Failure("app_not_loadable", "cannot load the Celery app %r from %s: %s: %s"
                      % (name, os.getcwd(), type(exc).__name__, exc))


def connect(app, timeout):
    try:
        conn = app.connection_for_write()
        conn.ensure_connection(max_retries=2, interval_start=0.5, interval_step=0.5,
                               interval_max=1, timeout=timeout)
        return conn
    except Exception as exc:
        raise Failure("broker_unreachable", "cannot connect to the broker: %s: %s"
                      % (type(exc).__name__, exc))


def queues_settled(seen, nodes, wanted):
    """Whether active_queues shows every wanted-present queue and no wanted-absent one."""
    settled = True
    for node in nodes:
        if node not in seen:
            settled = False
            continue
        names = set(q.get("name") for q in seen[node] or [])
        if set(wanted["present"].get(node, [])) - names:
            settled = False
        if set(wanted["absent"].get(node, [])) & names:
            settled = False
    return settled


def execute(app, conn, request, clock=time.monotonic, sleep=time.sleep):
    """Gather the facts, send the control commands, await the queues; every call names NODES."""
    nodes = list(request["nodes"])
    if not nodes:
        raise Failure("bad_request", "refusing to run without a destination")
    timeout = float(request["timeout"])

    def inspector():
        return app.control.inspect(destination=nodes, timeout=timeout, connection=conn)

    result = {"inspect": {}, "control": [], "after": None}
    try:
        for fact in request["inspect"]:
            result["inspect"][fact] = getattr(inspector(), fact)()
        for item in request["control"]:
            send = getattr(app.control, item["command"])
            replies = send(item["queue"], destination=nodes, reply=True, timeout=timeout,
                           connection=conn)
            result["control"].append({"command": item["command"], "queue": item["queue"],
                                      "replies": replies})
        wanted = request.get("await_queues")
        if wanted:
            # Workers apply add/cancel_consumer after they replied: a reply alone proves nothing.
            deadline = clock() + float(wanted["within"])
            while True:
                seen = inspector().active_queues() or {}
                settled = queues_settled(seen, nodes, wanted)
                if settled or clock() >= deadline:
                    break
                sleep(0.2)
            result["after"] = {"active_queues": seen, "settled": settled}
    except Exception as exc:
        raise Failure("control_failed", "%s: %s" % (type(exc).__name__, exc))
    return result


def run(request):
    """The answer document for a request; never raises."""
    try:
        import celery

        version = celery.__version__
    except Exception as exc:
        return {"ok": False, "error": "celery_missing",
                "message": "cannot import celery in %s: %s: %s" % (sys.prefix, type(exc).__name__, exc)}
    try:
        app = load_app(request["app"])
        if not request["nodes"]:
            raise Failure("bad_request", "refusing to run without a destination")
        conn = connect(app, float(request["connect_timeout"]))
        try:
            result = execute(app, conn, request)
        finally:
            try:
                conn.release()
            except Exception:
                pass
    except Failure as failure:
        return {"ok": False, "error": failure.kind, "message": failure.message}
    result.update(ok=True, celery_version=version, nodes=list(request["nodes"]))
    return result


def main(request_json, budget):
    """Answer on the real stdout, run everything else with stdout pointing at stderr."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(document):
        out.write(json.dumps(document, default=str))
        out.write("\n")
        out.flush()
        # os._exit: no atexit handler or thread of the app may print or hang after the answer.
        os._exit(0 if document.get("ok") else 3)

    seconds = max(1, int(budget))

    def on_alarm(signum, frame):
        answer({"ok": False, "error": "timeout",
                "message": "no complete answer within %d s (broker slow or unreachable?)" % seconds})

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    answer(run(json.loads(request_json)))
