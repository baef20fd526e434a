"""The errors that decide a job's exit code (job.py): BadInput → 2, Preempted → 75, anything else → 1."""


class BadInput(Exception):
    """Input the user must fix (spec, config, data, shapes, unknown preset); retrying cannot help."""


class Preempted(Exception):
    """SIGTERM arrived: the job stopped after saving what could be saved."""
