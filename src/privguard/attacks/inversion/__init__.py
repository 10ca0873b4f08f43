"""Model inversion (reconstruct what the model saw) and attribute inference (recover a hidden
field of a person's record).

Every module here is found by :func:`privguard.attacks.registry.discover`; none needs listing
in this file.
"""
