"""Training: the one epoch / early-stopping loop, and DP-SGD (Opacus) as a wrapper around it.

Models (:mod:`privguard.models`) build their networks, batches and losses and hand them to
:func:`fit`; DP-SGD wraps them first (:func:`make_private`). Nothing here imports
:mod:`privguard.models`, :mod:`privguard.defenses` or :mod:`privguard.audit`.
"""

from privguard.training.dp import PrivacySpent, PrivateTraining, make_private, quiet_opacus
from privguard.training.loop import FitResult, ShuffledBatches, fit

__all__ = [
    "FitResult",
    "PrivacySpent",
    "PrivateTraining",
    "ShuffledBatches",
    "fit",
    "make_private",
    "quiet_opacus",
]
