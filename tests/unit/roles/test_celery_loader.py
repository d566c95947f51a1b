"""The loader that hands the role's transport options to every Celery process of the app
(roles/celery/files/taskstack_celery_loader.py), run as the units run it: a fresh interpreter
whose environment holds CELERY_LOADER, PYTHONPATH and TASKSTACK_CELERY_TRANSPORT_OPTIONS, loading
apps configured each way users configure them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[3] / "roles" / "celery" / "files"
OPTIONS = {"master_name": "taskstack", "sentinel_kwargs": {"password": "s3cret"}}
LOADER = "taskstack_celery_loader:TransportOptionsLoader"

# Each app keeps a visibility_timeout of its own, set the way the comment says.
APPS = {
    "keyword arguments": """
app = Celery("proj", broker_transport_options={"visibility_timeout": 7200},
             result_backend_transport_options={"visibility_timeout": 7200})
""",
    "config_from_object with a namespace (Django)": """
class Settings:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7200}
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": 7200}
app = Celery("proj")
app.config_from_object(Settings, namespace="CELERY")
""",
    "conf.update before the app is configured (Flask)": """
app = Celery("proj")
app.conf.update(broker_transport_options={"visibility_timeout": 7200},
                result_backend_transport_options={"visibility_timeout": 7200})
""",
    "the app's own master_name, which the role's replaces": """
app = Celery("proj", broker_transport_options={"visibility_timeout": 7200, "master_name": "mine"},
             result_backend_transport_options={"visibility_timeout": 7200, "master_name": "mine"})
""",
}


def settings_seen(app_code: str, environ: dict[str, str]) -> dict:
    code = "import json\nfrom celery import Celery\n" + app_code + """
print(json.dumps({"broker": dict(app.conf.broker_transport_options or {}),
                  "backend": dict(app.conf.result_backend_transport_options or {}),
                  "loader": type(app.loader).__name__}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_LOADER", "TASKSTACK_CELERY_TRANSPORT_OPTIONS")}
    env.update(environ)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def role_environment(options=None) -> dict[str, str]:
    return {"CELERY_LOADER": LOADER, "PYTHONPATH": str(FILES),
            "TASKSTACK_CELERY_TRANSPORT_OPTIONS": json.dumps(OPTIONS if options is None else options)}


@pytest.mark.parametrize("style", sorted(APPS))
def test_options_reach_broker_and_backend_and_the_app_keeps_its_own(style):
    seen = settings_seen(APPS[style], role_environment())
    expected = {"visibility_timeout": 7200, **OPTIONS}
    assert seen == {"broker": expected, "backend": expected, "loader": "TransportOptionsLoader"}


def test_without_the_loader_the_options_do_not_arrive():
    """What the loader is for: Celery itself reads no transport options from the environment."""
    environ = role_environment()
    del environ["CELERY_LOADER"]
    seen = settings_seen(APPS["keyword arguments"], environ)
    assert "master_name" not in seen["broker"] and "master_name" not in seen["backend"]


def test_no_options_leave_the_app_as_it_is():
    seen = settings_seen(APPS["keyword arguments"], role_environment({}))
    assert seen["broker"] == {"visibility_timeout": 7200}
    assert seen["backend"] == {"visibility_timeout": 7200}


def test_options_that_are_not_an_object_stop_the_app_with_the_reason():
    env = {**os.environ, **role_environment(), "TASKSTACK_CELERY_TRANSPORT_OPTIONS": "[1, 2]"}
    done = subprocess.run([sys.executable, "-c", "from celery import Celery\nCelery('p').conf.broker_url"],
                          env=env, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode != 0
    assert "TASKSTACK_CELERY_TRANSPORT_OPTIONS must hold a JSON object" in done.stderr
