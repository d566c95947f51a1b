"""Celery loader of taskstack.celery: transport options the app's own configuration cannot undo.

Celery reads the broker URL and the result backend from the environment (CELERY_BROKER_URL,
CELERY_RESULT_BACKEND) but not broker_transport_options or result_backend_transport_options,
and a `sentinel://` URL is useless without `master_name` there, nor a Sentinel that wants a
password without `sentinel_kwargs`. The celery role writes, into the app's environment file:

    CELERY_LOADER="taskstack_celery_loader:TransportOptionsLoader"
    PYTHONPATH="<the directory of this file>"
    TASKSTACK_CELERY_TRANSPORT_OPTIONS="{json}"

Celery takes the loader class from CELERY_LOADER when the app does not name one. Once the app's
configuration is loaded (on_after_configure: config_from_object, Celery(...) keyword arguments,
app.conf changes made before that), this loader merges the options into both settings: the
app's other keys (visibility_timeout, ...) are kept, the role's win. Every process that loads the
app with that environment gets them: the units, Flower, the role's app probe and the deploy's
control helpers.
"""

import json
import os

from celery.loaders.app import AppLoader

ENVIRONMENT_VARIABLE = "TASKSTACK_CELERY_TRANSPORT_OPTIONS"
SETTINGS = ("broker_transport_options", "result_backend_transport_options")


def transport_options(environ=None):
    """The options the role wrote; {} when none. A value that is not a JSON object is an error."""
    text = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE) or ""
    if not text.strip():
        return {}
    options = json.loads(text)
    if not isinstance(options, dict):
        raise ValueError("%s must hold a JSON object, not %s" % (ENVIRONMENT_VARIABLE, type(options).__name__))
    return options


def merged(current, options):
    """The app's options with the role's on top (a copy: the app's dict is left alone)."""
    result = dict(current or {})
    result.update(options)
    return result


class TransportOptionsLoader(AppLoader):
    """Celery's default loader, plus the role's transport options once the app is configured."""

    def __init__(self, app=None, **kwargs):
        super().__init__(app=app, **kwargs)
        self.taskstack_transport_options = transport_options()
        if self.taskstack_transport_options and app is not None:
            app.on_after_configure.connect(self.apply_transport_options, weak=False)

    def apply_transport_options(self, sender=None, source=None, **kwargs):
        conf = source if source is not None else sender.conf
        for setting in SETTINGS:
            conf[setting] = merged(conf.get(setting), self.taskstack_transport_options)
