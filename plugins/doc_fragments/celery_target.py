# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every Celery control plugin shares: which app, and how to run its helper."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  app:
    description:
      - The Celery app, as given to C(celery -A) (V(proj), V(proj.celery:app), ...).
    type: str
    required: true
  app_dir:
    description:
      - The app's working directory (the units' C(WorkingDirectory)); put first on C(PYTHONPATH).
    type: path
    required: true
  venv:
    description:
      - The virtualenv that has Celery and the app's dependencies installed.
    type: path
    required: true
  environment_file:
    description:
      - The systemd EnvironmentFile of the worker units (C(CELERY_BROKER_URL), ...). Parsed with
        systemd's rules; a line systemd would ignore (such as C(export NAME=value)) is an error.
      - Passwords in it are masked in everything this module returns.
    type: path
  environment:
    description:
      - More variables for the helper, on top of O(environment_file). Not logged.
    type: dict
    default: {}
  run_as:
    description:
      - Run the helper as this user (for example the C(celery) account) instead of the user the
        module runs as, so importing the app never leaves files owned by root.
    type: str
"""
