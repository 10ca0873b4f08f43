"""Defences: output policies (here); differentially private training is
:mod:`privguard.training.dp`."""

from privguard.defenses.output import (
    ABSTAIN,
    Chain,
    Label,
    Noise,
    OutputPolicy,
    ProtectedPredictor,
    ReverseSigmoid,
    Round,
    Threshold,
    TopK,
    answer_labels,
    parse_policy,
    protect,
)

__all__ = [
    "ABSTAIN",
    "Chain",
    "Label",
    "Noise",
    "OutputPolicy",
    "ProtectedPredictor",
    "ReverseSigmoid",
    "Round",
    "Threshold",
    "TopK",
    "answer_labels",
    "parse_policy",
    "protect",
]
