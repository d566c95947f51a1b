# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that names what the collection puts on a host.

Units, pool instances, Celery nodenames, drop-in directories, the local fact and the deploy
lock are built here and nowhere else: the roles, the deploy role and the tests all call these
functions (the tests import this file as plain Python), so a name cannot drift between them.

    {{ celery_app_name | taskstack.celery.worker_unit('default', 'blue') }}
    -> celery-demo-worker@default-blue.service
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Mapping, Optional

SYSTEMD_DIR = "/etc/systemd/system"
# Runtime units and drop-ins: gone at reboot. A temporary pool (taskstack.celery.backlog) lives
# here, where no clean-up of the configured pools (which looks in SYSTEMD_DIR) ever looks.
RUNTIME_SYSTEMD_DIR = "/run/systemd/system"
# The instance suffix and the marker file of a temporary pool: never a colour, so neither
# site.yml's clean-up of pools missing from the inventory nor a deploy ever names it.
TEMPORARY = "temporary"
TEMPORARY_MARKER = "taskstack-temporary-pool.json"
FACTS_DIR = "/etc/ansible/facts.d"
LOCK_DIR = "/run/lock"
COLOURS = ("blue", "green")


def app_short_name(celery_app: str) -> str:
    """`proj.celery:app` -> `proj`: the app's name in file and unit names."""
    head = re.sub(r"[.:].*$", "", str(celery_app))
    return re.sub(r"[^A-Za-z0-9_-]", "-", head)


def worker_instance(pool: str, colour: str) -> str:
    """A pool instance of one colour: the unit's instance name, `<pool>-<colour>`."""
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")
    return f"{pool}-{colour}"


def worker_unit(app_name: str, pool: Optional[str] = None, colour: Optional[str] = None) -> str:
    """The worker unit template (no pool) or one pool instance of one colour."""
    if pool is None:
        return f"celery-{app_name}-worker@.service"
    if colour is None:
        raise ValueError("a pool instance needs its colour")
    return f"celery-{app_name}-worker@{worker_instance(pool, colour)}.service"


def dropin_dir(unit: str) -> str:
    """The drop-in directory of a unit (its sandbox, hardening.conf, lives there)."""
    return f"{SYSTEMD_DIR}/{unit}.d"


def worker_dropin_dir(app_name: str, pool: Optional[str] = None, colour: Optional[str] = None) -> str:
    """Drop-in directory of the unit template (hardening) or of one pool instance (pool.conf)."""
    return dropin_dir(worker_unit(app_name, pool, colour))


def worker_nodename(pool: str, colour: str, host: str) -> str:
    """The Celery nodename of a pool instance on a host (its unit passes `<pool>-<colour>@%h`)."""
    return f"{worker_instance(pool, colour)}@{host}"


def temporary_worker_instance(pool: str) -> str:
    """A temporary pool's instance name, `<pool>-temporary`: it shares the worker unit template
    (user, environment file, sandbox, warm stop) with the configured pools."""
    return f"{pool}-{TEMPORARY}"


def temporary_worker_unit(app_name: str, pool: str) -> str:
    return f"celery-{app_name}-worker@{temporary_worker_instance(pool)}.service"


def temporary_worker_dropin_dir(app_name: str, pool: str) -> str:
    """The runtime drop-in directory of a temporary pool: its command line and its marker."""
    return f"{RUNTIME_SYSTEMD_DIR}/{temporary_worker_unit(app_name, pool)}.d"


def temporary_worker_marker(app_name: str, pool: str) -> str:
    return f"{temporary_worker_dropin_dir(app_name, pool)}/{TEMPORARY_MARKER}"


def temporary_worker_nodename(pool: str, host: str) -> str:
    return f"{temporary_worker_instance(pool)}@{host}"


def beat_unit(app_name: str) -> str:
    return f"celery-{app_name}-beat.service"


def flower_unit(app_name: str) -> str:
    return f"celery-{app_name}-flower.service"


def env_file(app_name: str, config_dir: str) -> str:
    """The app's environment file (broker URL and celery_environment), read by every unit."""
    return f"{config_dir.rstrip('/')}/{app_name}.env"


def health_command(app_name: str) -> str:
    """The health command the worker role installs on a worker host (one line of JSON, exit 0/1)."""
    return f"/usr/local/bin/celery-health-{app_name}"


def health_config_file(app_name: str, config_dir: str) -> str:
    """What the health command reads: the monitor login, the queues, the thresholds (0640)."""
    return f"{config_dir.rstrip('/')}/{app_name}-health.json"


def local_fact_name(app_name: str) -> str:
    """Name of the local fact that records the live colour (ansible_local[<name>])."""
    return "celery_" + app_name.replace("-", "_")


def local_fact_file(app_name: str) -> str:
    return f"{FACTS_DIR}/{local_fact_name(app_name)}.fact"


def deploy_lock_path(celery_app: str) -> str:
    """The deploy lock directory (mkdir succeeds for exactly one deploy of the app)."""
    return f"{LOCK_DIR}/taskstack-celery-deploy-" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(celery_app))


def deploy_safety_net(app_name: str) -> str:
    """The deploy's safety net on a worker host: the transient timer and service the deploy arms
    (<name>.timer, <name>.service) and the log of what it did (/run/<name>.log)."""
    return f"celery-{app_name}-deploy-safety-net"


def worker_units(app_name: str, pools: List[str], colour: str) -> List[str]:
    """The units of several pools of one colour, in the order of `pools`."""
    return [worker_unit(app_name, pool, colour) for pool in pools]


def live_colour(ansible_local: Optional[Mapping[str, Any]], app_name: str) -> str:
    """The colour whose pool instances serve, from the local fact the worker role writes once
    and a blue-green deploy switches; blue before the fact exists."""
    fact = (ansible_local or {}).get(local_fact_name(app_name)) or {}
    colour = str(fact.get("live_colour", "blue")).strip()
    if colour not in COLOURS:
        raise ValueError(f"{local_fact_file(app_name)} names the live colour {colour!r}, not blue or green")
    return colour


def colour_path(colour: str, blue_path: str, green_path: str) -> str:
    """A colour's release directory or virtualenv: blue runs from the first path (where beat and
    Flower run too), green from the second."""
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")
    return blue_path if colour == "blue" else green_path


def other_colour(colour: str) -> str:
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")
    return COLOURS[1 - COLOURS.index(colour)]


class FilterModule:
    """Names of the collection's units, nodenames and files."""

    def filters(self) -> Dict[str, Callable[..., str]]:
        return {
            "app_short_name": app_short_name,
            "worker_instance": worker_instance,
            "worker_unit": worker_unit,
            "dropin_dir": dropin_dir,
            "worker_dropin_dir": worker_dropin_dir,
            "worker_nodename": worker_nodename,
            "temporary_worker_instance": temporary_worker_instance,
            "temporary_worker_unit": temporary_worker_unit,
            "temporary_worker_dropin_dir": temporary_worker_dropin_dir,
            "temporary_worker_marker": temporary_worker_marker,
            "temporary_worker_nodename": temporary_worker_nodename,
            "beat_unit": beat_unit,
            "flower_unit": flower_unit,
            "env_file": env_file,
            "health_command": health_command,
            "health_config_file": health_config_file,
            "local_fact_name": local_fact_name,
            "local_fact_file": local_fact_file,
            "deploy_lock_path": deploy_lock_path,
            "deploy_safety_net": deploy_safety_net,
            "other_colour": other_colour,
            "worker_units": worker_units,
            "live_colour": live_colour,
            "colour_path": colour_path,
        }
