"""Membership inference: was this record in the training set?

Every module here is found by :func:`privguard.attacks.registry.discover`; none needs listing
in this file.
"""
