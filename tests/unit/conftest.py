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
