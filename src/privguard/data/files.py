"""Loaders for user data: CSV, Parquet, NPZ files and folders of images.

Every loader returns a :class:`~privguard.data.dataset.Dataset` and records in
``Dataset.preprocessing`` (plain JSON) what it needs to read other files the same way: the
tabular encoding, or the class list and image size. Passing that record back as
``preprocessing=`` replays it instead of learning it again, so a model sees the same encoding at
audit time as at training time. Every problem a user can cause raises :class:`DataError` with a
message that says what to do.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privguard.data.dataset import Dataset
from privguard.data.preprocess import TabularPreprocessor, as_text, join_names
from privguard.errors import DataError

SUPPORTED = (
    "a CSV file (.csv, .csv.gz, .tsv), a Parquet file (.parquet, .pq), an NPZ file with arrays "
    "x and y (.npz) or a folder with one sub-folder of images per class"
)
IMAGE_SUFFIXES = (".pgm", ".ppm", ".pnm", ".png", ".jpg", ".jpeg", ".bmp")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # 16-bit grayscale: values 0..65535
#: Integer labels are class indices below this: a label of 10**12 is refused, not allocated for.
MAX_CLASSES = 100_000


def load_path(
    path: str | Path, *, label: str | None = None, preprocessing: dict[str, Any] | None = None
) -> Dataset:
    """Load a user file or image folder, choosing the reader by suffix (see :data:`SUPPORTED`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file or folder: {path}; give {SUPPORTED}")
    if path.is_dir():
        _no_label(label, path)
        return load_image_folder(path, preprocessing=preprocessing)
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")):
        return load_table(path, label=label, preprocessing=preprocessing)
    if name.endswith(".npz"):
        _no_label(label, path)
        return load_npz(path, preprocessing=preprocessing)
    raise DataError(f"cannot tell the format of {path} from its name; give {SUPPORTED}")


# -- tables -------------------------------------------------------------------------------------


def load_table(
    path: str | Path, *, label: str | None = None, preprocessing: dict[str, Any] | None = None
) -> Dataset:
    """Read a CSV or Parquet file and encode it with :class:`TabularPreprocessor`.

    ``label`` names the label column (required unless ``preprocessing`` records it).
    Returns a tabular dataset, x float32 ``(n, features)`` in [0, 1].
    """
    path = Path(path)
    df = read_table(path)
    return from_dataframe(
        df,
        name=str(path),
        label=label,
        preprocessing=preprocessing,
        source=f"user file {path}",
        where=path.name,
    )


def read_table(path: Path) -> pd.DataFrame:
    """The raw records of a CSV / TSV / Parquet file, as pandas reads them."""
    is_parquet = path.name.lower().endswith((".parquet", ".pq"))
    kind = "Parquet" if is_parquet else "CSV"
    try:
        if is_parquet:
            df = pd.read_parquet(path)
        else:
            sep = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
            df = pd.read_csv(path, sep=sep)
    except FileNotFoundError as e:
        raise DataError(f"no such file: {path}") from e
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path} is empty; a {kind} file needs a header row and records") from e
    except Exception as e:  # the readers raise many types (parser, unicode, arrow, OS errors)
        raise DataError(
            f"could not read {path} as a {kind} file ({_one_line(e)}); check that it "
            f"is a valid {kind} file" + ("" if is_parquet else " with a header row")
        ) from e
    if df.shape[1] == 0:
        raise DataError(f"{path} has no columns")
    return df


def from_dataframe(
    df: pd.DataFrame,
    *,
    name: str,
    label: str | None = None,
    preprocessing: dict[str, Any] | None = None,
    source: str = "",
    licence: str = "",
    extra: tuple[str, ...] = (),
    where: str | None = None,
) -> Dataset:
    """Encode a DataFrame of raw records into a tabular :class:`Dataset`.

    Fits a :class:`TabularPreprocessor` on ``df`` with ``label`` as the label column, or replays
    ``preprocessing`` (then ``label``, if given, must be the recorded one). The raw values of the
    ``extra`` columns (e.g. a sensitive attribute) are kept in ``Dataset.extra``, shape ``(n,)``.
    """
    where = where or name
    if preprocessing is None:
        if label is None:
            raise DataError(
                f"{where}: say which column holds the labels with --label; columns are: "
                f"{join_names(df.columns)}"
            )
        pre = TabularPreprocessor().fit(df, label, where=where)
    else:
        pre = TabularPreprocessor.from_dict(preprocessing)
        if label is not None and label != pre.label:
            raise DataError(
                f"--label {label!r} differs from the label column {pre.label!r} the model was "
                "trained with; leave --label out"
            )
    x, y = pre.transform(df, where=where)
    for c in extra:
        if c not in df.columns:
            raise DataError(f"{where} has no column {c!r}; columns are: {join_names(df.columns)}")
    return Dataset(
        name=name,
        x=x,
        y=y,
        kind="tabular",
        classes=pre.classes,
        feature_names=pre.feature_names,
        bounds=(0.0, 1.0),
        preprocessing=pre.to_dict(),
        source=source,
        licence=licence,
        extra={c: df[c].to_numpy() for c in extra},
    )


# -- NPZ ----------------------------------------------------------------------------------------


def load_npz(path: str | Path, *, preprocessing: dict[str, Any] | None = None) -> Dataset:
    """Read arrays ``x`` and ``y`` from an NPZ file.

    ``x`` of shape ``(n, features)`` is tabular and used as is; ``(n, h, w)`` or
    ``(n, c, h, w)`` is images: uint8 (or other integer) pixels 0..255 are divided by 255, float
    pixels must already lie in [0, 1]. Integer labels are class indices; other labels (text,
    bool, fractional numbers) are mapped to indices in sorted order of their values.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path} is not an NPZ archive; save the inputs and labels with "
            "numpy.savez(path, x=..., y=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            found = list(f.files)
            if "x" not in found or "y" not in found:
                raise DataError(
                    f"{path} must hold arrays named 'x' (inputs) and 'y' (labels); it holds: "
                    f"{join_names(found) or 'no arrays'}. Save it with "
                    "numpy.savez(path, x=..., y=...)"
                )
            # the labels' count is checked from the array headers, before either is read
            n_x, n_y = _npy_shape(f, "x", path), _npy_shape(f, "y", path)
            if len(n_x) and len(n_y) == 1 and n_y[0] != n_x[0]:
                raise DataError(f"{path.name}: x has {n_x[0]} records but y has {n_y[0]} labels")
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(
            f"could not read {path} as an NPZ file ({_one_line(e)}); save numeric "
            "arrays with numpy.savez(path, x=..., y=...) (object arrays are never unpickled)"
        ) from e
    where = path.name
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: x must be numeric, not {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise DataError(
            f"{where}: x has shape {x.shape}; give (n, features) for tabular data, or (n, h, w) "
            "or (n, channels, h, w) for images"
        )
    if len(x) == 0:
        raise DataError(f"{where}: x has no records")
    recorded = _recorded(preprocessing, "npz", where)
    y_idx, classes = _npz_labels(
        y, len(x), where, None if recorded is None else recorded["classes"]
    )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DataError(f"{where}: {bad} record(s) of x contain NaN or infinite values; drop them")
    kind = "tabular" if x.ndim == 2 else "image"
    if recorded is not None and recorded.get("kind") != kind:
        raise DataError(
            f"{where} holds {kind} data but the model was trained on {recorded.get('kind')} data"
        )
    if kind == "image":
        x = _npz_images(x, where)
        bounds = (0.0, 1.0)
    else:
        x = x.astype(np.float32)
        bounds = (float(x.min()), float(x.max()))
    return Dataset(
        name=str(path),
        x=x,
        y=y_idx,
        kind=kind,
        classes=classes,
        bounds=bounds,
        preprocessing={"type": "npz", "kind": kind, "classes": classes},
        source=f"user file {path}",
    )


def _npy_shape(f: Any, name: str, path: Path) -> tuple[int, ...]:
    """The shape in the header of array ``name`` of the open NPZ ``f``, without reading it."""
    try:
        with f.zip.open(f"{name}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(fh)
    except KeyError:
        return ()  # not a plain .npy member: np.load reports it
    return tuple(int(d) for d in shape)


def _npz_images(x: np.ndarray, where: str) -> np.ndarray:
    """Images ``(n, h, w)`` or ``(n, c, h, w)`` -> float32 ``(n, c, h, w)`` in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[1] > 4 and x.shape[3] in (1, 3, 4):
        raise DataError(
            f"{where}: x has shape {x.shape}, which looks like channels-last images; save "
            "x.transpose(0, 3, 1, 2) so it is (n, channels, height, width)"
        )
    lo, hi = x.min(), x.max()
    if x.dtype.kind in "iu":
        if lo < 0 or hi > 255:
            raise DataError(
                f"{where}: integer pixels must lie in 0..255, found {lo}..{hi}; save floats "
                "scaled to [0, 1] instead"
            )
        return x.astype(np.float32) / 255.0
    if lo < 0 or hi > 1:
        raise DataError(
            f"{where}: float pixels must lie in [0, 1], found [{lo:g}, {hi:g}]; scale them "
            "(e.g. divide by 255) or save uint8 pixels"
        )
    return x.astype(np.float32)


def _npz_labels(
    y: np.ndarray, n: int, where: str, recorded: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Labels ``(n,)`` -> (int64 class indices, class names)."""
    if y.ndim != 1:
        hint = "; for one-hot labels save y.argmax(axis=1)" if y.ndim == 2 else ""
        raise DataError(f"{where}: y must be a 1-D array of labels, got shape {y.shape}{hint}")
    if len(y) != n:
        raise DataError(f"{where}: x has {n} records but y has {len(y)} labels")
    if y.dtype.kind not in "biufUS":
        raise DataError(f"{where}: y must hold numbers or text, not {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{where}: y holds NaN or infinite labels; drop those records")
    integral = y.dtype.kind in "iu" or (y.dtype.kind == "f" and bool(np.all(y == np.round(y))))
    if integral and len(y) and y.min() < 0:
        raise DataError(f"{where}: integer labels must be class indices >= 0, found {y.min()}")
    if integral and len(y) and y.max() >= MAX_CLASSES:
        top = y.max().item()
        shown = f"{top:g}" if top >= 1e16 else str(int(top))
        raise DataError(
            f"{where}: integer labels are class indices 0..{MAX_CLASSES - 1}, found {shown}; "
            "renumber the classes 0, 1, 2, ... (or save the labels as text)"
        )
    if recorded is None:
        present = np.unique(y)
        if len(present) < 2:
            only = as_text(present[0].item()) if len(present) else "none"
            raise DataError(
                f"{where}: y has a single label ({only!r}); a classifier needs at least two "
                "classes: add records of other classes"
            )
        if integral:
            classes = [str(i) for i in range(int(y.max()) + 1)]
        else:
            classes = [as_text(v) for v in np.unique(y).tolist()]
    else:
        classes = [str(c) for c in recorded]
    index = {c: i for i, c in enumerate(classes)}
    text = [as_text(v) for v in (y.astype(np.int64) if integral else y).tolist()]
    unseen = sorted(set(text) - set(index))
    if unseen:
        raise DataError(
            f"{where}: y has label(s) {join_names(unseen)} that the model was not trained on (its "
            f"classes are: {join_names(classes)}); drop those records"
        )
    return np.array([index[t] for t in text], dtype=np.int64), classes


# -- image folders ------------------------------------------------------------------------------


def load_image_folder(root: str | Path, *, preprocessing: dict[str, Any] | None = None) -> Dataset:
    """Read a folder with one sub-folder of images per class (e.g. AT&T faces: s1/1.pgm ...).

    Classes are the sub-folder names in natural order (s2 before s10). Images (PGM, PPM, PNG,
    JPEG, BMP) must all have one size; they are read as grayscale if all are grayscale, else as
    RGB, scaled to [0, 1]. Returns x float32 ``(n, 1 or 3, height, width)``; the image files,
    relative to ``root``, are in ``Dataset.extra["file"]``.
    """
    from PIL import Image

    root = Path(root)
    where = str(root)
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: natural_key(d.name),
    )
    if not class_dirs:
        raise DataError(
            f"{where} has no sub-folders: put the images of each class in a sub-folder named "
            "after the class (e.g. s1/1.pgm, s2/1.pgm)"
        )
    recorded = _recorded(preprocessing, "image-folder", where)
    if recorded is None and len(class_dirs) < 2:
        raise DataError(
            f"{where} has a single class folder ({class_dirs[0].name!r}); a classifier needs at "
            "least two classes: add a sub-folder of images for each other class"
        )
    classes = [d.name for d in class_dirs] if recorded is None else list(recorded["classes"])
    index = {c: i for i, c in enumerate(classes)}
    unknown = [d.name for d in class_dirs if d.name not in index]
    if unknown:
        raise DataError(
            f"{where} has class folder(s) {join_names(unknown)} that the model was not trained on "
            f"(its classes are: {join_names(classes)}); remove them"
        )

    files: list[Path] = []
    labels: list[int] = []
    for d in class_dirs:
        found = sorted(
            (f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda f: natural_key(f.name),
        )
        if not found:
            raise DataError(
                f"class folder {d} has no images ({', '.join(IMAGE_SUFFIXES)}); add images or "
                "remove the folder"
            )
        files += found
        labels += [index[d.name]] * len(found)

    # First pass reads only the headers: sizes and colour modes.
    modes, sizes = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                modes.append(im.mode)
                sizes.append(im.size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(
                f"could not read image {f} ({_one_line(e)}); remove or replace it"
            ) from e
    size = tuple(recorded["size"]) if recorded is not None else sizes[0]
    for f, s in zip(files, sizes, strict=True):
        if s != size:
            other = "the model was trained on" if recorded is not None else f"{files[0]} is"
            raise DataError(
                f"images differ in size: {f} is {s[0]}x{s[1]} but {other} {size[0]}x{size[1]} "
                "(width x height); resize them all to one size"
            )
    if recorded is not None:
        channels = int(recorded["channels"])
    else:
        channels = 1 if all(m in _GRAY_MODES for m in modes) else 3

    x = np.empty((len(files), channels, size[1], size[0]), dtype=np.float32)
    for i, (f, mode) in enumerate(zip(files, modes, strict=True)):
        try:
            with Image.open(f) as im:
                if channels == 1 and mode in _WIDE_MODES:
                    x[i, 0] = np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0)
                elif channels == 1:
                    x[i, 0] = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
                else:
                    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
                    x[i] = rgb.transpose(2, 0, 1)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(
                f"could not decode image {f} ({_one_line(e)}); remove or replace it"
            ) from e

    return Dataset(
        name=where,
        x=x,
        y=np.array(labels, dtype=np.int64),
        kind="image",
        classes=classes,
        bounds=(0.0, 1.0),
        preprocessing={
            "type": "image-folder",
            "classes": classes,
            "channels": channels,
            "size": [int(size[0]), int(size[1])],
        },
        source=f"user folder {root}",
        extra={"file": np.array([str(f.relative_to(root)) for f in files])},
    )


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: s2 < s10, 2.pgm < 10.pgm."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# -- helpers ------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    """An exception as ``Type: message`` on one line (the CLI prints errors on one line)."""
    return " ".join(f"{type(e).__name__}: {e}".split())


def _no_label(label: str | None, path: Path) -> None:
    if label is not None:
        raise DataError(
            f"--label applies to CSV and Parquet files; {path} carries its labels itself "
            "(array y of an NPZ file, or the sub-folder names of an image folder): leave it out"
        )


def _recorded(preprocessing: dict[str, Any] | None, kind: str, where: str) -> dict[str, Any] | None:
    """Check that a recorded preprocessing is of ``kind`` (``None`` passes through)."""
    if preprocessing is None:
        return None
    if not isinstance(preprocessing, dict) or preprocessing.get("type") != kind:
        got = preprocessing.get("type") if isinstance(preprocessing, dict) else preprocessing
        raise DataError(
            f"{where}: the model was trained on data of type {got!r}, not {kind!r}; audit it "
            "with the kind of data it was trained on"
        )
    needed = {"npz": ("kind", "classes"), "image-folder": ("classes", "channels", "size")}[kind]
    if any(k not in preprocessing for k in needed):
        raise DataError(f"{where}: the recorded preprocessing is malformed; retrain the model")
    return preprocessing
