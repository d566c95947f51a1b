"""The role READMEs are generated from the argument specs, and the check notices a stale one."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("role_readme", ROOT / "scripts" / "role_readme.py")
role_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(role_readme)


def test_every_role_readme_is_up_to_date():
    assert role_readme.main(["--check"]) == 0


def test_a_spec_change_makes_the_check_fail(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "roles", tmp_path / "roles")
    monkeypatch.setattr(role_readme, "ROOT", tmp_path)
    spec = tmp_path / "roles" / "celery_worker" / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text().replace("default: 2\n", "default: 3\n", 1))
    assert role_readme.main(["--check"]) == 1
    assert "roles/celery_worker/README.md" in capsys.readouterr().err


def test_nested_pool_options_and_markup_are_rendered():
    text = (ROOT / "roles" / "celery_worker" / "README.md").read_text()
    assert "| `celery_worker_pools[].queues` | list of str | **required** |" in text
    assert "C(" not in text and "I(" not in text
