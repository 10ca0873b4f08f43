"""Adapters for models the user already trained (scikit-learn, and more frameworks as files).

See :mod:`privguard.models.adapters.base` for the interface and the registries; each other
module here registers its adapters and file loaders when imported (done on first use).
"""

from privguard.models.adapters.base import (
    ModelAdapter,
    Recipe,
    adapt,
    load_model_file,
    register_adapter,
    register_loader,
    registered,
)

__all__ = [
    "ModelAdapter",
    "Recipe",
    "adapt",
    "load_model_file",
    "register_adapter",
    "register_loader",
    "registered",
]
