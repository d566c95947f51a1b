"""The roles never import the app as root.

The demo app, like a Django app that opens its log file at import, leaves a trace named after
the importing process's user id (DEMO_IMPORT_TRACE_DIR, set in molecule.yml). The celery role
loads the app to check it before writing its environment: as root that created files the
workers (user celery) then could not open. Every import must be the service user's.
"""

from __future__ import annotations

TRACE_DIR = "/var/lib/celery/import-trace"


def test_the_app_was_imported_by_the_service_user_and_never_by_root(host):
    celery_uid = host.user("celery").uid
    traces = host.run(f"ls {TRACE_DIR}").stdout.split()
    print(f"imports by: {traces}")
    assert f"imported-by-uid-{celery_uid}" in traces
    assert "imported-by-uid-0" not in traces, "root imported the app (probe or control helper)"
