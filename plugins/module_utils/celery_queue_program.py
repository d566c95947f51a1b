# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read, or remove exactly what was read of, one queue of a Celery app on Redis; run inside the
app's virtualenv.

Like celery_control_program, the module reads this file's text, appends
`main(<request as JSON>, <seconds>)` and gives it to `<venv>/bin/python -` on stdin, with the app
directory as working directory and the units' environment as environment. Nothing secret is on
the command line. It prints exactly one JSON document on stdout.

The keys are kombu's own: the app's Redis channel names them (Channel._q_for_pri over the
channel's priority_steps), so a queue's priority sub-queues are read and removed with it.
kombu LPUSHes new messages and BRPOPs from the other end (kombu/transport/redis.py), so the
messages read are the last `count` of each list until a worker takes one. The removal takes
exactly those: in one WATCH/MULTI transaction it checks that the last `count` messages of each
key still hash to what was read, then RPOPs `count`; messages that arrived since stay. If a
worker took some, or the transaction raced with a writer, nothing is removed and it says so.
Never FLUSHDB, never FLUSHALL, never another key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sys


class Failure(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def digest(messages):
    """One sha256 over the messages in order, each prefixed with its length (no ambiguity)."""
    h = hashlib.sha256()
    for message in messages:
        h.update(len(message).to_bytes(8, "big"))
        h.update(message)
    return h.hexdigest()


def as_text(message):
    """A message body for the JSON file: text when it is UTF-8 (kombu's JSON), else base64."""
    try:
        return {"body": message.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(message).decode("ascii")}


def queue_keys(channel, queue):
    """[(priority step, key)] of a queue as the app's kombu channel names them, no duplicates."""
    seen, keys = set(), []
    for step in channel.priority_steps:
        key = channel._q_for_pri(queue, step)
        if key not in seen:
            seen.add(key)
            keys.append((step, key))
    return keys


def read(client, keys):
    """Every message of every key, read in one transaction (a consistent snapshot)."""
    pipe = client.pipeline(transaction=True)
    for _step, key in keys:
        pipe.lrange(key, 0, -1)
    lists = pipe.execute()
    result = {}
    for (step, key), messages in zip(keys, lists):
        result[key] = {"priority": step, "count": len(messages), "sha256": digest(messages),
                       "messages": [as_text(m) for m in messages]}
    return result


def remove(client, keys, expect, check, watch_error, attempts=5):
    """RPOP exactly the `count` messages of each key that were read, if they are still its last
    ones; else change nothing and fail."""
    for _attempt in range(attempts):
        pipe = client.pipeline(transaction=True)
        try:
            pipe.watch(*[key for _step, key in keys])
            result = {}
            for step, key in keys:
                wanted = expect.get(key) or {"count": 0, "sha256": digest([])}
                count = int(wanted["count"])
                tail = pipe.lrange(key, -count, -1) if count else []
                if len(tail) != count or digest(tail) != wanted["sha256"]:
                    raise Failure("changed", "the queue's key %r no longer ends with the %d message(s) "
                                  "that were saved (a worker took some, or they were requeued): nothing "
                                  "was removed; save and purge again" % (key, count))
                result[key] = {"priority": step, "purged": count}
            if check:
                return result
            pipe.multi()
            for _step, key in keys:
                if result[key]["purged"]:
                    pipe.rpop(key, result[key]["purged"])
            pipe.execute()
            return result
        except watch_error:
            continue
        finally:
            pipe.reset()
    raise Failure("busy", "the queue changed during each of %d attempts: nothing was removed" % attempts)


def run(request):
    try:
        from celery.app.utils import find_app
        from redis.exceptions import WatchError
    except Exception as exc:
        return {"ok": False, "error": "celery_missing",
                "message": "cannot import celery and redis in %s: %s: %s" % (sys.prefix, type(exc).__name__, exc)}
    try:
        try:
            app = find_app(request["app"])
        except BaseException as exc:  # an app may call sys.exit() while it loads
            raise Failure("app_not_loadable", "cannot load the Celery app %r: %s: %s"
                          % (request["app"], type(exc).__name__, exc))
        conn = app.connection_for_write()
        try:
            conn.ensure_connection(max_retries=2, interval_start=0.5, interval_step=0.5, interval_max=1,
                                   timeout=float(request["connect_timeout"]))
            channel = conn.default_channel
            if not hasattr(channel, "_q_for_pri") or not hasattr(channel, "client"):
                raise Failure("not_redis", "the app's broker transport is %s, not Redis"
                              % conn.transport_cls)
            if getattr(channel, "global_keyprefix", ""):
                raise Failure("not_supported", "broker_transport_options global_keyprefix is set: "
                              "purge does not handle prefixed keys")
            keys = queue_keys(channel, request["queue"])
            if request.get("expect") is None:
                return {"ok": True, "keys": read(channel.client, keys)}
            return {"ok": True, "keys": remove(channel.client, keys, request["expect"],
                                               bool(request.get("check")), WatchError)}
        finally:
            conn.release()
    except Failure as failure:
        return {"ok": False, "error": failure.kind, "message": failure.message}
    except Exception as exc:
        return {"ok": False, "error": "broker_failed", "message": "%s: %s" % (type(exc).__name__, exc)}


def main(request_json, budget):
    """Answer on the real stdout, run everything else with stdout pointing at stderr."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(document):
        out.write(json.dumps(document))
        out.write("\n")
        out.flush()
        os._exit(0 if document.get("ok") else 3)

    seconds = max(1, int(budget))

    def on_alarm(signum, frame):
        answer({"ok": False, "error": "timeout", "message": "no answer within %d s" % seconds})

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    answer(run(json.loads(request_json)))
