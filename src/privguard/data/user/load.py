"""The whole user split: reads the parts, checks them against each other and the model, encodes
them and assembles the three roles (members, non-members, population; a share of the
non-members when no population is given). See :mod:`privguard.data.user`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from privguard.data.dataset import Dataset
from privguard.data.preprocess import as_text, join_names
from privguard.data.split import Split
from privguard.data.user.codec import ArrayCodec, Codec, FrameCodec
from privguard.data.user.parts import _numeric_array, _Part, _row_hashes, read_part
from privguard.errors import ConfigError, DataError

POPULATION_SHARE = 0.5  # share of the non-members that becomes the population when none is given
PARTS = ("members", "nonmembers", "population")


class UserDataset(Dataset):
    """A :class:`Dataset` of the user's split; its summary says where the population came from."""

    user: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        d = super().summary()
        d["user_split"] = dict(getattr(self, "user", {}))
        return d


@dataclass
class UserData:
    """The user's split ready for an audit.

    Attributes:
        dataset: encoded records (members, then non-members, then population) and label indices.
        split: indices of the three roles in ``dataset``.
        codec: maps the attacks' vectors to what the model takes and back.
        raw: the raw records in the same order (DataFrame or array), as the model takes them.
        classes: the model's class labels; ``dataset.y`` indexes into them.
        info: what the report's data section says about the split.
    """

    dataset: UserDataset
    split: Split
    codec: Codec
    raw: Any
    classes: list[Any]
    info: dict[str, Any]


def load_user_split(
    members: Any,
    nonmembers: Any,
    population: Any = None,
    *,
    label: str | None = None,
    classes: list[Any] | None = None,
    columns: list[str] | None = None,
    dtype: Any = np.float32,
    frame_model: bool | None = None,
    seed: int = 0,
    population_share: float = POPULATION_SHARE,
) -> UserData:
    """Read and check the user's split, and encode it for the attacks.

    Args:
        members, nonmembers, population: DataFrames (with ``label``), ``(X, y)`` pairs or
            CSV / Parquet / NPZ paths; ``population`` is optional.
        label: the label column of tables.
        classes: the model's class labels (output column order); default: the sorted labels.
        columns: the columns a DataFrame model was fitted on (checked; ``None``: not known).
        dtype: what an array model computes in (records are given back in it).
        frame_model: whether the model takes a DataFrame (``True``) or arrays (``False``: tables
            of numeric columns are turned into arrays); ``None``: as the data comes.
        seed: seeds the population share taken from the non-members.
        population_share: share of the non-members that becomes the population when none is
            given (the rest stay non-members).
    """
    if members is None or nonmembers is None:
        raise ConfigError(
            "auditing your own model needs members= (the records it was trained on) and "
            "nonmembers= (records it never saw); CLI: --members FILE --nonmembers FILE"
        )
    parts = [read_part(members, name="members", label=label)]
    parts.append(read_part(nonmembers, name="nonmembers", label=label))
    if population is not None:
        parts.append(read_part(population, name="population", label=label))
    frames = [isinstance(p.features, pd.DataFrame) for p in parts]
    if frame_model is False and any(frames):
        for p in parts:
            p.features = _numeric_array(p)
        frames = [False] * len(parts)
    elif frame_model and not all(frames):
        raise DataError(
            "the model was fitted on a DataFrame: give members, non-members and population as "
            "tables (DataFrames with the label column, or CSV / Parquet files)"
        )
    if any(frames) and not all(frames):
        raise DataError(
            "give every part of the split the same way: all tables (DataFrames / CSV / Parquet) "
            "or all arrays"
        )
    if all(frames):
        feats = _align_frames(parts, columns)
        raw: Any = pd.concat(feats, ignore_index=True)
    else:
        shapes = {p.features.shape[1:] for p in parts}
        if len(shapes) > 1:
            raise DataError(
                "members, non-members and population have records of different shapes: "
                + ", ".join(f"{p.name} {p.features.shape[1:]}" for p in parts)
            )
        raw = np.concatenate([np.asarray(p.features) for p in parts])
    labels = np.concatenate([np.asarray(p.labels, dtype=object) for p in parts])
    counts = [len(p.labels) for p in parts]
    for p in parts:
        if len(p.labels) == 0:
            raise DataError(f"{p.name}: no records")

    _check_overlap(parts)
    classes = list(classes) if classes is not None else _sorted_labels(labels)
    y = _label_index(labels, classes)

    codec: Codec = FrameCodec(raw) if all(frames) else ArrayCodec(raw, dtype)
    x = codec.encode(raw)
    codec.remember(raw, x)

    n_m, n_n = counts[0], counts[1]
    members_idx = np.arange(n_m)
    non_idx = np.arange(n_m, n_m + n_n)
    info: dict[str, Any] = {"members": n_m, "nonmembers": n_n, "label": label, "seed": seed}
    sources = {p.name: p.source for p in parts}
    if population is not None:
        aux = np.arange(n_m + n_n, len(labels))
        info["population"] = {"records": counts[2], "source": "given"}
    else:
        if not 0 < population_share < 1:
            raise ConfigError("the population share must lie strictly between 0 and 1")
        aux, non_idx = _take_share(non_idx, y, population_share, seed)
        info["nonmembers"] = len(non_idx)
        info["population"] = {
            "records": len(aux),
            "source": f"{population_share:.0%} of the non-members (seed {seed}), stratified by "
            "label, since no population was given; they are the attacker's knowledge and are not "
            "evaluated",
        }
    if len(non_idx) < 2 or len(aux) < 2:
        raise DataError(
            f"too few non-member / population records ({len(non_idx)} / {len(aux)}); give more "
            "non-members or a population"
        )
    info["sources"] = sources
    hashes = {p.name: p.sha256 for p in parts if p.sha256}
    if hashes:
        info["sha256"] = hashes
    info["content_sha256"] = {p.name: p.content_hash() for p in parts}
    name = sources.get("members", "user data")
    ds = UserDataset(
        name=name if name not in ("DataFrame", "arrays") else "user split",
        x=x,
        y=y,
        kind=codec.kind,
        classes=[as_text(c) for c in classes],
        feature_names=list(codec.feature_names),
        bounds=codec.bounds,
        preprocessing=codec.preprocessing,
        source="the user's own members / non-members / population",
    )
    ds.user = info
    split = Split(members_idx, np.sort(non_idx), np.sort(aux), np.zeros(0, np.int64), seed)
    return UserData(ds, split, codec, raw, classes, info)


def _align_frames(parts: list[_Part], columns: list[str] | None) -> list[pd.DataFrame]:
    frames = [p.features for p in parts]
    assert all(isinstance(f, pd.DataFrame) for f in frames)
    want = list(columns) if columns is not None else list(frames[0].columns)
    out = []
    for p, f in zip(parts, frames, strict=True):
        have = list(f.columns)  # type: ignore[union-attr]
        extra = [c for c in have if c not in want]
        absent = [c for c in want if c not in have]
        if extra:
            who = "the model was not fitted on" if columns is not None else "the members lack"
            raise DataError(
                f"{p.name} has column(s) {join_names(extra)} that {who}; drop them (the model's "
                f"columns are {join_names(want)})"
            )
        if absent:
            raise DataError(
                f"{p.name} lacks column(s) {join_names(absent)} that the model was fitted on"
            )
        out.append(f[want])  # type: ignore[index]
    return out


def _check_overlap(parts: list[_Part]) -> None:
    members = set(_row_hashes(parts[0]).tolist())
    shared = int(sum(h in members for h in _row_hashes(parts[1]).tolist()))
    if shared:
        raise DataError(
            f"{shared} non-member record(s) also appear among the members (same features and "
            "label); a record cannot be both: remove them from the non-members"
        )


def _sorted_labels(labels: np.ndarray) -> list[Any]:
    distinct = {as_text(v): v for v in labels}
    try:
        return [distinct[k] for k in sorted(distinct, key=lambda k: float(k))]
    except ValueError:
        return [distinct[k] for k in sorted(distinct)]


def _label_index(labels: np.ndarray, classes: list[Any]) -> np.ndarray:
    index = {as_text(c): i for i, c in enumerate(classes)}
    unknown = sorted({as_text(v) for v in labels} - set(index))
    if unknown:
        distinct = len({as_text(v) for v in labels})
        if distinct > len(classes):
            raise DataError(
                f"the model gives {len(classes)} output(s) per record but the labels have "
                f"{distinct} classes ({join_names(unknown)} unknown to it); check the label "
                "column and that this is the model trained on these labels"
            )
        raise DataError(
            f"label value(s) {join_names(unknown)} are not among the model's classes "
            f"({join_names(as_text(c) for c in classes)}); check the label column"
        )
    return np.array([index[as_text(v)] for v in labels], dtype=np.int64)


def _take_share(
    idx: np.ndarray, y: np.ndarray, share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (taken, kept), ``share`` of each label's records taken (seeded)."""
    rng = np.random.default_rng(seed)
    taken, kept = [], []
    for label in np.unique(y[idx]):
        group = idx[y[idx] == label]
        group = group[rng.permutation(len(group))]
        k = int(round(len(group) * share))
        taken.append(group[:k])
        kept.append(group[k:])
    return np.concatenate(taken), np.concatenate(kept)
