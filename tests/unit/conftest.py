"""Make this checkout importable as ansible_collections.taskstack.celery.

The tests import plugins by their collection path, as Ansible does. A temp dir holds
ansible_collections/taskstack/celery -> the checkout, and is put first on sys.path.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

_CHECKOUT = Path(__file__).resolve().parents[2]
_ROOT = Path(tempfile.mkdtemp(prefix="taskstack-unit-"))
(_ROOT / "ansible_collections" / "taskstack").mkdir(parents=True)
(_ROOT / "ansible_collections" / "taskstack" / "celery").symlink_to(_CHECKOUT)
sys.path.insert(0, str(_ROOT))

# The ansible package ships ansible_collections as a namespace package; if anything imported
# it before this ran, extend its search path instead of relying on a fresh import.
if "ansible_collections" in sys.modules:
    sys.modules["ansible_collections"].__path__.insert(0, str(_ROOT / "ansible_collections"))


class FakeClock:
    """A monotonic clock that moves only when the code under test sleeps."""

    def __init__(self, start: float = 100.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app_target(tmp_path):
    """The options of a Celery control module for a fake app: an app dir, a venv python that is
    never run and, given a broker URL, an EnvironmentFile that holds it (and its password)."""
    def make(broker_url: str | None = None) -> dict:
        app_dir, python = tmp_path / "app", tmp_path / "venv" / "bin" / "python"
        app_dir.mkdir()
        python.parent.mkdir(parents=True)
        python.write_text("#!/bin/false\n")
        python.chmod(0o755)
        target = {"app": "proj", "app_dir": str(app_dir), "venv": str(tmp_path / "venv")}
        if broker_url:
            env_file = tmp_path / "proj.env"
            env_file.write_text('CELERY_BROKER_URL="%s"\n' % broker_url)
            target["environment_file"] = str(env_file)
        return target
    return make
