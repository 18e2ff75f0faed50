"""One exception hierarchy for the errors a user can cause, and the exit codes.

Every expected failure (bad flag, unreadable model, data that does not fit) raises a subclass of
:class:`AdvauditError`.  The CLI prints it as one line on stderr and exits with :data:`EXIT_INPUT`;
no traceback.  Running out of memory is reported the same way (exit 2, with a hint to lower
``--batch-size`` / ``--n``).

Anything else is a bug in advaudit.  The CLI never lets it look like a failed gate: it prints one line,
``advaudit: internal error: <Type>: <message> (run with --verbose for the traceback; please report it)``,
and exits with :data:`EXIT_INTERNAL` (3); with ``-v/--verbose`` the traceback follows.  The same holds for
an error raised in a worker process of ``--workers N``.

Exit codes: 0 :data:`EXIT_OK`, 1 :data:`EXIT_GATE`, 2 :data:`EXIT_INPUT`, 3 :data:`EXIT_INTERNAL`,
130 :data:`EXIT_INTERRUPTED`.
"""

from __future__ import annotations

EXIT_OK = 0
"""Success: the command ran and every gate passed."""
EXIT_GATE = 1
"""The command ran but a gate failed (``--fail-under``, ``--fail-on-backdoor``, ...)."""
EXIT_INPUT = 2
"""Usage or input error: nothing was evaluated."""
EXIT_INTERNAL = 3
"""An unexpected error (a bug in advaudit): one line on stderr, the traceback with ``--verbose``."""
EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C, SIGTERM)."""


class AdvauditError(Exception):
    """Base class for expected, user-facing errors (exit code 2)."""

    slug = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class ModelError(AdvauditError):
    """The model file cannot be loaded or used as asked."""

    slug = "model"


class SpecError(AdvauditError):
    """The input specification (range, mean/std, layout) is invalid."""

    slug = "spec"


class DataError(AdvauditError):
    """The data cannot be loaded or does not fit the model."""

    slug = "data"


class PluginError(AdvauditError):
    """A plugin or component name/parameter is unknown or invalid."""

    slug = "plugin"


class UsageError(AdvauditError):
    """Options that make no sense together."""

    slug = "usage"


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (its type name when the message is empty), at most ``limit``
    characters: what a one-line error says about a library exception it wraps."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]
