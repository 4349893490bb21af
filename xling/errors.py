"""User-facing errors: one clear line that names the thing and the fix.

Raise `XlingError` for anything a user can cause (a missing file, a bad config
value, a corrupt checkpoint). The CLI prints its message as one line on stderr
and exits with status 2, without a traceback. Bugs stay ordinary exceptions.
"""


class XlingError(Exception):
    """A mistake in the user's input, reported as one line with the fix."""

    exit_code = 2


class WorkerLost(XlingError):
    """A worker process died (killed by the system, out of memory): not the input's fault, so a stage that can
    resume keeps what it finished for the next run."""
