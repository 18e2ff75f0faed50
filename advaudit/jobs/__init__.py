"""The job API: one function per command, each taking a frozen options dataclass (the one place for
every default) and returning a typed result with ``.metrics()`` and ``.to_report()``.

The click commands and the audit's YAML steps only build options and call these functions, so a
command, an audit step and a Python caller run the same code.  :mod:`advaudit.api` re-exports them.
"""

from .base import DataOptions, JobContext, JobResult, ModelOptions, Progress, open_inputs

__all__ = ["DataOptions", "JobContext", "JobResult", "ModelOptions", "Progress", "open_inputs"]
