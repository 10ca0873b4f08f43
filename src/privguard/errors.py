"""privguard's own exception types.

Every error a user can cause (a bad file, a wrong shape, an unknown dataset, an access level too
low for an attack) is raised as one of these, with a message that says what is wrong and what to
do. The CLI prints the message on one line and exits with code 2; anything else is a bug.
"""

from __future__ import annotations


class PrivguardError(Exception):
    """Base class: a problem the user can fix. The message says how."""


class DataError(PrivguardError):
    """Unreadable, missing or malformed data (files, shapes, NaN values, unknown datasets)."""


class ModelError(PrivguardError):
    """A model directory that is missing, incomplete, altered, or of an unknown kind."""


class AccessError(PrivguardError):
    """An attack asked the oracle for more than its access level gives."""


class BudgetExhaustedError(PrivguardError):
    """The oracle's query budget is spent."""


class ConfigError(PrivguardError):
    """Invalid options: unknown attack names, bad flag values, a malformed plan file."""
