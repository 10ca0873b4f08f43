"""Memorization in text models: canary exposure and training-data extraction.

The attacks: ``exposure`` (Carlini et al. 2019) and ``extract`` (Carlini et al. 2021), found
like every attack module by :func:`privguard.attacks.registry.discover`. They talk to a model
through a :class:`TextOracle` and know only the canary formats and public text
(:class:`TextKnowledge`).
"""

from privguard.attacks.memorization.exposure import Exposure, ExposureGuesses, FormatRanking
from privguard.attacks.memorization.extraction import Extract, ExtractionGuesses
from privguard.attacks.memorization.knowledge import TextKnowledge
from privguard.attacks.memorization.oracle import TextOracle

__all__ = [
    "Exposure",
    "ExposureGuesses",
    "Extract",
    "ExtractionGuesses",
    "FormatRanking",
    "TextKnowledge",
    "TextOracle",
]
