"""Attacks, one module each, registered under the short names the CLI uses."""

from privguard.attacks.base import Attack, Knowledge, MembershipGuesses
from privguard.attacks.registry import all_attacks, register, resolve

__all__ = ["Attack", "Knowledge", "MembershipGuesses", "all_attacks", "register", "resolve"]
