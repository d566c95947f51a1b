"""A small Celery app the test scenarios and `make demo` deploy: like a user's app, nothing more."""
