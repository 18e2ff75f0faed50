"""``advaudit.errors.first_line``: the one helper that turns a library exception into the text of a
one-line error."""

from __future__ import annotations

import pytest

from advaudit.errors import first_line


@pytest.mark.parametrize(("exc", "limit", "expected"), [
    (ValueError("bad header\nline two"), None, "bad header"),
    (ValueError("  padded  \n"), None, "padded"),
    (ValueError(""), None, "ValueError"),
    (KeyError(), None, "KeyError"),
    (OSError("x" * 500), 120, "x" * 120),
    (RuntimeError("short"), 120, "short"),
])
def test_first_line(exc: BaseException, limit: int | None, expected: str) -> None:
    assert first_line(exc, limit) == expected
