"""Membership inference: was this record in the training set?"""

from privguard.attacks.membership import (  # noqa: F401  (importing registers the attacks)
    label_only,
    lira,
    rmia,
    shadow,
    threshold,
)
