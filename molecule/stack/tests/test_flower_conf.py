"""Flower's authentication cannot be undone by a file shipped with the app.

Flower reads flowerconfig.py from its working directory (the app directory) after its FLOWER_*
variables: a `basic_auth = []` there turned the authentication off. The unit names a root-owned
configuration file of the role's with --conf, so the app's file is never read.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

from stacklib import credential, wait_for

FLOWER = "http://127.0.0.1:5555/flower"
APP_CONF = "/srv/celery/app/flowerconfig.py"
UNIT = "celery-demo-flower.service"


def status_of(path: str, password: str | None = None) -> int:
    request = urllib.request.Request(FLOWER + path)
    if password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except urllib.error.URLError:
        return 0


def test_a_flowerconfig_in_the_app_directory_cannot_turn_authentication_off(host):
    password = credential(host.backend.host, "flower_admin_password")
    planted = host.run(
        f"printf 'basic_auth = []\\nunauthenticated_api = True\\nport = 5555\\n' > {APP_CONF}"
        f" && systemctl restart {UNIT}"
    )
    assert planted.rc == 0, planted.stderr
    try:
        wait_for(lambda: status_of("/healthcheck", password) == 200, 30, what="Flower to answer")
        assert status_of("/api/workers") == 401, "the app's flowerconfig.py turned the authentication off"
        assert status_of("/api/workers", password) == 200
        unit = host.run(f"systemctl cat {UNIT}").stdout
        assert "--conf=/etc/celery/demo-flowerconfig.py" in unit
        conf = host.file("/etc/celery/demo-flowerconfig.py")
        assert (conf.user, conf.group, conf.mode) == ("root", "flower", 0o640)
    finally:
        host.run(f"rm -f {APP_CONF} && systemctl restart {UNIT}")
        wait_for(lambda: status_of("/healthcheck", password) == 200, 30, what="Flower to answer again")
