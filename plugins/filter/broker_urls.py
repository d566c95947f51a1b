# Copyright: taskstack.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The broker and result-backend URL of an app whose Redis is watched by Sentinel.

kombu and Celery's Redis result backend take one `sentinel://` URL per sentinel, joined by `;`:
each names a sentinel's address and port, and the data nodes' ACL user and password (the
sentinels have their own password, which goes in the transport options' `sentinel_kwargs`, as
does `master_name`). The celery role builds the list of sentinels from the inventory group
`redis_sentinel`:

    {{ groups['redis_sentinel'] | taskstack.celery.sentinel_nodes(hostvars, inventory_hostname) }}
    -> [{'name': 'a', 'host': '127.0.0.1', 'port': 26411}, ...]
    {{ nodes | taskstack.celery.sentinel_url('celery', password, 0) }}
    -> sentinel://celery:...@127.0.0.1:26411/0;sentinel://celery:...@b.example:26412/0
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence
from urllib.parse import quote

SENTINEL_PORT = 26379


def sentinel_nodes(hosts: Sequence[str], hostvars: Mapping[str, Any], this_host: str = "",
                   address: str = "", default_port: int = SENTINEL_PORT) -> List[Dict[str, Any]]:
    """Each sentinel host as {name, host, port}: `address` when given (hosts that share one
    loopback), else 127.0.0.1 for this host itself and the ansible_host (or inventory name) of
    the others; its sentinel_port (default 26379)."""
    nodes = []
    for name in hosts:
        host_vars = hostvars[name] if name in hostvars else {}
        if address:
            host = address
        elif name == this_host:
            host = "127.0.0.1"
        else:
            host = str(host_vars.get("ansible_host") or name)
        nodes.append({"name": name, "host": host, "port": int(host_vars.get("sentinel_port", default_port))})
    return nodes


def url_host(host: str) -> str:
    """An IPv6 address in brackets, as a URL wants it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def sentinel_url(nodes: Sequence[Mapping[str, Any]], user: str, password: str, db: int) -> str:
    """The `;`-joined sentinel:// URLs of the nodes, with the data user's credentials and db."""
    if not nodes:
        raise ValueError("sentinel_url needs at least one sentinel")
    credentials = f"{quote(str(user), safe='')}:{quote(str(password), safe='')}@"
    return ";".join(f"sentinel://{credentials}{url_host(str(node['host']))}:{int(node['port'])}/{int(db)}"
                    for node in nodes)


class FilterModule:
    """The sentinel:// URLs of the broker and result backend."""

    def filters(self) -> Dict[str, Any]:
        return {"sentinel_nodes": sentinel_nodes, "sentinel_url": sentinel_url}
