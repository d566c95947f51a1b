"""Every role's argument spec and defaults agree, so docs and validation never drift.

- each key of defaults/main.yml is an option of the role's main entry point, and vice versa
  (except options that are required and so have no default);
- each option has a description and a type; each default in the spec equals the default file's;
- every variable a role defines starts with the role's name (internal ones with _<role>).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if p.is_dir())


def load(path: Path) -> dict:
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def spec_options(role: Path) -> dict:
    specs = load(role / "meta" / "argument_specs.yml")["argument_specs"]
    return specs["main"]["options"]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_default_is_a_documented_option(role):
    defaults = load(role / "defaults" / "main.yml")
    options = spec_options(role)
    assert sorted(set(defaults) - set(options)) == [], "defaults missing from argument_specs"
    without_default = {k for k, v in options.items() if k not in defaults and not v.get("required")}
    assert sorted(without_default) == [], "options with no default must be required: true"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_option_has_description_and_type(role):
    for name, option in spec_options(role).items():
        assert option.get("description"), f"{name}: no description"
        assert option.get("type"), f"{name}: no type"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_defaults_equal_the_defaults_file(role):
    defaults = load(role / "defaults" / "main.yml")
    for name, option in spec_options(role).items():
        if "default" in option:
            assert option["default"] == defaults.get(name), f"{name}: spec and defaults differ"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_variables_carry_the_role_prefix(role):
    prefix = role.name + "_"
    public = set(load(role / "defaults" / "main.yml")) | set(spec_options(role))
    assert sorted(v for v in public if not v.startswith(prefix)) == []
    internal = set(load(role / "vars" / "main.yml"))
    assert sorted(v for v in internal if not v.startswith(("_" + prefix, "__" + prefix))) == []
