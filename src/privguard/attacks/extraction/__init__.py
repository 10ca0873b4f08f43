"""Model extraction: copy a model through its prediction API.

Importing this package registers its attacks: ``equation-solving`` (exact for softmax
regression), and the learning-based ``knockoff``, ``jacobian``, ``active-extraction`` and
``random-queries`` (which learn from labels alone when that is all the oracle gives).
"""

from privguard.attacks.extraction import (  # noqa: F401
    active,
    equation_solving,
    jacobian,
    knockoff,
    random_queries,
)
