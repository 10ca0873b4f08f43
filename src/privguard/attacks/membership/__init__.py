"""Membership inference: was this record in the training set?"""

from privguard.attacks.membership import threshold  # noqa: F401  (registers the attacks)
