"""The sentinel:// URLs the celery role writes (plugins/filter/broker_urls.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from kombu.utils.url import url_to_parts

from ansible_collections.taskstack.celery.plugins.filter.broker_urls import (
    FilterModule,
    sentinel_nodes,
    sentinel_url,
)

HOSTVARS = {
    "a": {"sentinel_port": 26411},
    "b": {"sentinel_port": 26412, "ansible_host": "10.0.0.2"},
    "c": {},
}


def test_nodes_use_loopback_for_this_host_and_ansible_host_for_others():
    assert sentinel_nodes(["a", "b", "c"], HOSTVARS, "a") == [
        {"name": "a", "host": "127.0.0.1", "port": 26411},
        {"name": "b", "host": "10.0.0.2", "port": 26412},
        {"name": "c", "host": "c", "port": 26379},
    ]


def test_a_host_missing_from_hostvars_is_reached_by_its_name_on_the_default_port():
    assert sentinel_nodes(["x"], {}, "a") == [{"name": "x", "host": "x", "port": 26379}]


def test_an_address_replaces_every_sentinel_host():
    assert [node["host"] for node in sentinel_nodes(["a", "b"], HOSTVARS, "a", "127.0.0.1")] == ["127.0.0.1"] * 2


def test_url_names_every_sentinel_with_the_data_user_and_db():
    nodes = sentinel_nodes(["a", "b"], HOSTVARS, "a")
    url = sentinel_url(nodes, "celery", "pw", 1)
    assert url == "sentinel://celery:pw@127.0.0.1:26411/1;sentinel://celery:pw@10.0.0.2:26412/1"


def test_password_with_url_characters_survives_kombu_parsing():
    password = "a/b:c@d%e;f?g#h"
    url = sentinel_url([{"host": "h", "port": 1}], "cel ery", password, 0)
    assert url.count(";") == 0
    parts = url_to_parts(url)
    assert (parts.scheme, parts.hostname, parts.port) == ("sentinel", "h", 1)
    assert parts.password == password
    assert parts.username == "cel ery"
    assert urlsplit(url).path == "/0"


def test_ipv6_address_is_bracketed():
    assert sentinel_url([{"host": "::1", "port": 26379}], "u", "p", 0) == "sentinel://u:p@[::1]:26379/0"


def test_no_sentinel_is_an_error():
    with pytest.raises(ValueError):
        sentinel_url([], "u", "p", 0)


def test_filters_are_registered():
    assert set(FilterModule().filters()) == {"sentinel_nodes", "sentinel_url"}
