"""A small Celery app the test scenarios and `make demo` deploy: like a user's app, nothing more."""

# What a deploy's version probe reads (celery_deploy_version_probe in the deploy scenario).
__version__ = "0.1.0"
