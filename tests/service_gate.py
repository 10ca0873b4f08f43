"""Skip, or fail, a test whose service or tool is missing (PostgreSQL, Redis, Chromium, ...).

On a laptop a test that needs a service the machine lacks skips and says why (``pytest -rs``
lists the reasons). In CI, ``.ci/run`` sets ``PRIVGUARD_REQUIRE_SERVICES=1``: then the same
test fails, so a run cannot go green with parts untested.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVICES_ENV = "PRIVGUARD_REQUIRE_SERVICES"


def services_required() -> bool:
    """Whether ``PRIVGUARD_REQUIRE_SERVICES`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def skip_or_fail(why: str | None) -> None:
    """Nothing when ``why`` is ``None``; else skip saying ``why``, or fail when services are
    required."""
    if not why:
        return
    if services_required():
        pytest.fail(f"{why} ({REQUIRE_SERVICES_ENV}=1: a missing service or tool fails the run)")
    pytest.skip(why)
