"""Attacks, one module each, registered under the short names the CLI uses."""

from privguard.attacks.base import (
    Attack,
    AttributeGuesses,
    Compute,
    ExtractionGuesses,
    InversionGuesses,
    Knowledge,
    MembershipGuesses,
    SensitiveAttribute,
)
from privguard.attacks.registry import all_attacks, register, resolve

__all__ = [
    "Attack",
    "AttributeGuesses",
    "Compute",
    "ExtractionGuesses",
    "InversionGuesses",
    "Knowledge",
    "MembershipGuesses",
    "SensitiveAttribute",
    "all_attacks",
    "register",
    "resolve",
]
