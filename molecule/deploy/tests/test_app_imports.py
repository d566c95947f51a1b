"""A deploy's control helpers import the app as the service user, never as root.

The demo app leaves imported-by-uid-<uid> in DEMO_IMPORT_TRACE_DIR (molecule.yml) at every
import. The check-mode deploy below asks the serving nodes through the helpers (which load the
app), as every deploy does first.
"""

from __future__ import annotations

from loadlib import deploy

TRACE_DIR = "/var/lib/celery/import-trace"


def test_the_deploy_helpers_never_import_the_app_as_root(host):
    host.run(f"rm -f {TRACE_DIR}/imported-by-uid-0")
    run = deploy("--check")[0]
    assert run.rc == 0, run.output[-3000:]
    assert "Ask the serving nodes" in run.output
    traces = host.run(f"ls {TRACE_DIR}").stdout.split()
    print(f"imports by: {traces}")
    assert "imported-by-uid-0" not in traces, "a control helper imported the app as root"
