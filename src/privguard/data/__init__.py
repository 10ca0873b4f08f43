"""Data for privguard: built-in datasets, user files, and the seeded member split.

``load_dataset("digits")`` loads a built-in (see :func:`list_datasets`);
``load_dataset("people.csv", label="income")`` reads a user file (CSV, Parquet, NPZ, or a folder
of images with one sub-folder per class). Passing a model's recorded ``preprocessing`` replays
the encoding it was trained with instead of learning a new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from privguard.data.builtin import BUILTIN, DatasetInfo
from privguard.data.dataset import Dataset, check_xy
from privguard.data.files import SUPPORTED, from_dataframe, load_path
from privguard.data.preprocess import TabularPreprocessor
from privguard.data.split import Split, make_split
from privguard.errors import DataError

__all__ = [
    "BUILTIN",
    "Dataset",
    "DatasetInfo",
    "Split",
    "TabularPreprocessor",
    "check_xy",
    "from_dataframe",
    "list_datasets",
    "load_dataset",
    "make_split",
]


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    label: str | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> Dataset:
    """Load a built-in dataset by name, or a user file / image folder by path.

    A bare name (no path separator) that is a built-in loads the built-in; write ``./digits``
    for a folder of that name. ``label`` names the label column of a CSV / Parquet file.
    ``preprocessing`` is a record from ``Dataset.preprocessing`` (stored with a model) to replay.
    """
    text = os.fspath(name_or_path)
    is_bare = not isinstance(name_or_path, Path) and not any(s in text for s in ("/", os.sep))
    if is_bare and text in BUILTIN:
        info = BUILTIN[text]
        if label is not None and label != info.label_column:
            raise DataError(
                f"built-in dataset {text!r} has a fixed label ({info.label}); leave --label out, "
                "or save the data as a CSV file to use another column as the label"
            )
        return info.load(preprocessing)
    path = Path(text)
    if is_bare and not path.exists() and not path.suffix:
        raise DataError(
            f"unknown dataset {text!r}: built-ins are {', '.join(BUILTIN)}; "
            f"or give the path of {SUPPORTED}"
        )
    return load_path(path, label=label, preprocessing=preprocessing)


def list_datasets() -> list[DatasetInfo]:
    """The built-in datasets, in registry order."""
    return list(BUILTIN.values())
