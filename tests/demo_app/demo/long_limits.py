"""The demo app plus one task whose own hard time limit outlasts the broker's visibility timeout.

Nothing imports it: only `celery -A demo.long_limits` loads it, so the tests can show that the
worker role refuses an app whose task would run twice (`@app.task(time_limit=...)` replaces the
worker's --time-limit; with acks_late, Redis hands the message to a second worker after an hour).
"""

# The app's own tasks come with it: its `imports` setting loads demo.tasks.
from demo.app import app


@app.task(time_limit=4000)
def export() -> None:
    """A long export, allowed to run longer than the broker's visibility_timeout of 3600 s."""
