"""Model extraction: copy a model through its prediction API.

The attacks: ``equation-solving`` (exact for softmax regression), and the learning-based
``knockoff``, ``jacobian``, ``active-extraction`` and ``random-queries`` (which learn from labels
alone when that is all the oracle gives). Every module here is found by
:func:`privguard.attacks.registry.discover`; none needs listing in this file.
"""
