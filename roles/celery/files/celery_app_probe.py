"""Load a Celery app the way `celery -A` does and print its delivery settings as JSON.

usage: python -c "$(cat celery_app_probe.py)" APP APP_DIR < ENVIRONMENT_FILE
(run with the app's virtualenv python). The app's environment file comes on stdin, so that no
secret is ever on a command line. Exit 1 with a one-line reason when the app cannot be loaded.
"""

import json
import os
import sys


def read_env_file(stream):
    """The KEY="value" lines the celery role writes (double quotes, \\ and \" escaped)."""
    env = {}
    for raw in stream:
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        env[key.strip()] = value
    return env


def missing_transport_options(conf):
    wanted = json.loads(os.environ.get("TASKSTACK_CELERY_TRANSPORT_OPTIONS") or "{}")
    missing = []
    for setting in ("broker_transport_options", "result_backend_transport_options"):
        have = conf.get(setting) or {}
        missing.extend(f"{setting}.{key}" for key, value in sorted(wanted.items()) if have.get(key) != value)
    return missing


def main(argv):
    app_name, app_dir = argv[1:3]
    os.environ.update(read_env_file(sys.stdin))
    # The units' PYTHONPATH (the role's loader), which this interpreter started without.
    for entry in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
        sys.path.insert(0, entry)
    sys.path.insert(0, app_dir)
    try:
        from celery.app.utils import find_app

        app = find_app(app_name)
        app.loader.import_default_modules()
    except Exception as exc:  # the reason is the message the user needs
        print(f"{type(exc).__name__}: {exc}")
        return 1
    conf = app.conf
    transport = conf.broker_transport_options or {}
    expires = conf.result_expires
    # Each task's own hard limit, after task_annotations (applied when the app finalizes, which
    # app.tasks does); None: the worker's --time-limit applies (Celery uses `or`, so 0 too).
    tasks = {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}
    print(json.dumps({
        "main": app.main,
        "visibility_timeout": transport.get("visibility_timeout", 3600),
        "result_expires": expires.total_seconds() if hasattr(expires, "total_seconds") else expires,
        "task_acks_late": bool(conf.task_acks_late),
        "task_reject_on_worker_lost": bool(conf.task_reject_on_worker_lost),
        "worker_prefetch_multiplier": conf.worker_prefetch_multiplier,
        # Celery 5.6 and later; absent before.
        "worker_disable_prefetch": bool(conf.get("worker_disable_prefetch", False)),
        "tasks": sorted(tasks),
        "task_time_limits": {name: task.time_limit or None for name, task in sorted(tasks.items())},
        # The role's transport options (TASKSTACK_CELERY_TRANSPORT_OPTIONS) that did not reach
        # the app's configuration, as `setting.key` names: never their values (a password).
        "transport_options_missing": missing_transport_options(conf),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
