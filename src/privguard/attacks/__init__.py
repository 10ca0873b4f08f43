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
    Setting,
)
from privguard.attacks.registry import all_attacks, discover, families, normalise, register, resolve

__all__ = [
    "Attack",
    "AttributeGuesses",
    "Compute",
    "ExtractionGuesses",
    "InversionGuesses",
    "Knowledge",
    "MembershipGuesses",
    "SensitiveAttribute",
    "Setting",
    "all_attacks",
    "discover",
    "families",
    "normalise",
    "register",
    "resolve",
]
