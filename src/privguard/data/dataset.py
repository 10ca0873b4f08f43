"""The in-memory dataset every part of privguard passes around.

Inputs are float32 arrays scaled as the model expects: images are ``(n, channels, height, width)``
in [0, 1], tabular records ``(n, features)`` after the recorded preprocessing. Labels are int64
class indices ``0..n_classes-1``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privguard.errors import DataError


@dataclass
class Dataset:
    """A labelled dataset ready for training and attacks.

    Attributes:
        name: short name (``digits``) or the path it was read from.
        x: float32 inputs, ``(n, *input_shape)``.
        y: int64 labels in ``0..len(classes)-1``.
        kind: ``"image"`` or ``"tabular"``.
        classes: the class names, index = label.
        feature_names: tabular column names after encoding (empty for images).
        bounds: ``(low, high)`` per-feature bounds of valid inputs (scalars broadcast).
        preprocessing: JSON-serialisable description of how raw records became ``x`` (replayed at
            audit time on user files), or ``None`` for data that needs none.
        source: human-readable origin and licence.
        extra: raw columns kept beside the encoded ones (e.g. a sensitive attribute), by name.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    kind: str
    classes: list[str]
    feature_names: list[str] = field(default_factory=list)
    bounds: tuple[float, float] = (0.0, 1.0)
    preprocessing: dict[str, Any] | None = None
    source: str = ""
    licence: str = ""
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        check_xy(self.x, self.y, where=self.name)
        if len(self.y) and self.y.max() >= len(self.classes):
            raise DataError(
                f"{self.name}: label {int(self.y.max())} but only {len(self.classes)} classes"
            )
        if self.kind not in ("image", "tabular"):
            raise DataError(f"dataset kind must be 'image' or 'tabular', not {self.kind!r}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.y)

    def content_hash(self) -> str:
        """sha256 of the inputs and labels: recorded with a model, checked at audit time."""
        h = hashlib.sha256()
        h.update(str(self.x.shape).encode())
        h.update(self.x.tobytes())
        h.update(self.y.tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "n": len(self),
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "classes": self.classes,
            "sha256": self.content_hash(),
            "source": self.source,
            "licence": self.licence,
        }


def check_xy(x: np.ndarray, y: np.ndarray | None = None, *, where: str = "input") -> None:
    """The one place inputs are validated: shape agreement, finiteness, label range."""
    if x.ndim < 2:
        raise DataError(
            f"{where}: inputs must be a 2-D (records x features) or image array, got {x.shape}"
        )
    if len(x) == 0:
        raise DataError(f"{where}: no records")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DataError(
            f"{where}: {bad} record(s) contain NaN or infinite values; drop or impute them first"
        )
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{where}: {len(x)} inputs but labels of shape {y.shape}")
        if len(y) and (y.min() < 0):
            raise DataError(f"{where}: labels must be class indices >= 0")
