"""Model inversion (reconstruct what the model saw) and attribute inference (recover a hidden
field of a person's record)."""

from privguard.attacks.inversion import (  # noqa: F401  (importing registers the attacks)
    attribute,
    blackbox,
    label_only,
    mi_face,
    prior,
)
