"""Text that reaches the database, the logs and a terminal: names, tiers, ids, query parameters.

Such text must not carry control characters: a NUL makes PostgreSQL refuse the statement, and
terminal escape sequences in a key name would be replayed on an admin's terminal by
``privguard keys list``. :func:`check_text` refuses C0 controls (NUL included), DEL, C1 controls
and the Unicode bidirectional overrides (which reorder what a reader sees) with
:class:`InvalidText` — a 422 from the API and the dashboard, exit 2 from the CLI.
:func:`printable` shows text stored before this check existed with those characters escaped.
"""

from __future__ import annotations

import re

from privguard.errors import ConfigError

_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class InvalidText(ConfigError):
    """A name, tier, id or parameter with a control character (HTTP 422, CLI exit 2)."""


def check_text(value: str, what: str, *, max_len: int | None = None) -> str:
    """``value`` unchanged when it holds no control character (and at most ``max_len``
    characters); otherwise :class:`InvalidText` naming ``what`` and the first offender."""
    m = _FORBIDDEN.search(value)
    if m is not None:
        raise InvalidText(
            f"{what} contains the control character U+{ord(m.group()):04X} at position "
            f"{m.start()}; use printable text"
        )
    if max_len is not None and len(value) > max_len:
        raise InvalidText(f"{what} is {len(value)} characters long; the limit is {max_len}")
    return value


def printable(value: str | None) -> str:
    """``value`` with every control character written as an escape (``\\x1b``, ``\\u202e``)."""
    if value is None:
        return ""
    return _FORBIDDEN.sub(lambda m: m.group().encode("unicode_escape").decode(), value)
