"""Metrics only: a membership report from per-record scores the user already has, no queries.

A user who ran their own attack, or who only has a model's outputs, gives per-record scores and
a member flag: a DataFrame, a dict of arrays, or a CSV / Parquet / NPZ file (``privguard audit
--scores FILE``). Each score column (higher = more likely a member, unless named in
``lower_is_member``: a loss, say) becomes one attack entry of an ordinary
:class:`~privguard.audit.report.Report`, with the same membership metrics
(:func:`~privguard.audit.metrics.membership_metrics`: AUC with its interval, TPR at 1% / 0.1%
FPR, the epsilon lower bound), ROC curve and risk level as a full audit, so
:func:`privguard.write_report` writes report.json, report.html and model-card.md for it.

With no ``threshold`` for a column, the attacker's yes/no decisions (``attacker_tpr`` and
friends) are "score above the median score", and the report says so; the threshold-free
metrics (AUC, TPR at low FPR) do not depend on it.

Example:
    >>> report = privguard.audit_scores(df, member_column="is_member", lower_is_member=["loss"])
    >>> privguard.write_report(report, "report/")
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privguard import __version__
from privguard.audit.advice import advise
from privguard.audit.metrics import membership_metrics
from privguard.audit.report import AttackResult, Report, summarise
from privguard.audit.risk import explain
from privguard.data.preprocess import join_names
from privguard.errors import DataError

MEMBER_COLUMN = "is_member"
TRUE = {"1", "true", "yes", "member", "in", "t", "y"}
FALSE = {"0", "false", "no", "nonmember", "non-member", "out", "f", "n"}


def audit_scores(
    scores: Any,
    is_member: Any = None,
    *,
    member_column: str = MEMBER_COLUMN,
    columns: Iterable[str] | None = None,
    lower_is_member: Iterable[str] = (),
    threshold: Mapping[str, float] | None = None,
    seed: int = 0,
    command: str | None = None,
) -> Report:
    """A membership :class:`Report` from per-record scores and member flags (see the module
    docstring).

    Args:
        scores: a DataFrame (score columns + ``member_column``), a dict of 1-D arrays, a 1-D
            array (one score) or a CSV / Parquet / NPZ path.
        is_member: the member flags, when ``scores`` does not hold them.
        member_column: the flag column's name (bool, 0/1, or yes/no words).
        columns: the score columns to report (default: every numeric column but the flags).
        lower_is_member: columns where a lower score means "member" (losses).
        threshold: per column, the attacker's decision threshold (member when the score is
            above it; below it for ``lower_is_member`` columns).
        seed: seeds the bootstrap of the AUC's interval.
        command: the command line, recorded in the report's plan.

    Raises:
        DataError: flags missing or all one kind, a score column that is not numeric, lengths
            that differ, an unknown file kind.
    """
    frame, source, digest = _frame(scores)
    if is_member is not None:
        flags = np.asarray(is_member)
        if flags.ndim != 1 or len(flags) != len(frame):
            raise DataError(
                f"is_member has {flags.size} values for {len(frame)} scored records; give one "
                "flag per record"
            )
        frame = frame.assign(**{member_column: flags})
    if member_column not in frame.columns:
        raise DataError(
            f"the scores ({source}) have no member flag column {member_column!r}; its columns "
            f"are {join_names(frame.columns)} (CLI: --member-column NAME)"
        )
    member = _flags(frame[member_column], member_column)
    n_in, n_out = int(member.sum()), int((~member).sum())
    if n_in == 0 or n_out == 0:
        raise DataError(
            f"the member flags mark {n_in} member(s) and {n_out} non-member(s); a membership "
            "report needs both"
        )
    names = _score_columns(frame, member_column, columns)
    lower = {str(c) for c in lower_is_member}
    unknown = sorted(lower - set(names))
    if unknown:
        raise DataError(f"lower_is_member names {join_names(unknown)}, not score columns")
    thresholds = dict(threshold or {})
    results = []
    for name in names:
        raw = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        n_bad = int(np.isnan(raw).sum())
        if n_bad == len(raw):
            raise DataError(f"score column {name!r} holds no numbers")
        s = -raw if name in lower else raw
        notes = []
        if name in thresholds:
            t = float(thresholds[name])
            decisions = s >= (-t if name in lower else t)
            rule = f"threshold {t:g}"
        else:
            decisions = s > np.nanmedian(s)
            rule = "above the median score (no threshold given)"
            notes.append(
                "the attacker's decisions (attacker_tpr, attacker_fpr) are scores "
                f"{'below' if name in lower else 'above'} the median score: no threshold was "
                "given; AUC and TPR at low FPR do not depend on it"
            )
        if n_bad:
            notes.append(f"{n_bad} record(s) have no score; they rank lowest")
        metrics, curves, more = membership_metrics(s, decisions, member, seed=seed)
        level, reason = explain("membership", metrics)
        results.append(
            AttackResult(
                name=name,
                family="membership",
                access="scores",
                queries=0,
                seconds=0.0,
                metrics=metrics,
                risk=level,
                risk_reason=reason,
                description=(
                    f"per-record scores given by the user ({'lower' if name in lower else 'higher'}"
                    f" = member; decisions: {rule}); no model was queried"
                ),
                notes=notes + more,
                curves=curves,
            )
        )
    data: dict[str, Any] = {
        "name": source,
        "kind": "scores",
        "n": len(frame),
        "split": {"members": n_in, "nonmembers": n_out},
    }
    if digest:
        data["sha256"] = digest
    target = {
        "kind": "scores",
        "source": source,
        "note": "metrics from per-record scores the user gave; no model was queried",
    }
    summary = summarise(results)
    summary.update(advise(results, target, data, summary, "scores"))
    return Report(
        privguard_version=__version__,
        target=target,
        data=data,
        attacks=results,
        summary=summary,
        plan={
            "attacks": names,
            "access": "scores",
            "lower_is_member": sorted(lower),
            "seed": seed,
            "command": command,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )


def _frame(scores: Any) -> tuple[pd.DataFrame, str, str | None]:
    if isinstance(scores, pd.DataFrame):
        return scores.reset_index(drop=True), "DataFrame", None
    if isinstance(scores, Mapping):
        try:
            return pd.DataFrame({str(k): np.asarray(v) for k, v in scores.items()}), "arrays", None
        except ValueError as e:
            raise DataError(f"the score arrays do not line up: {e}") from None
    if isinstance(scores, str | Path):
        return _read(Path(scores))
    arr = np.asarray(scores)
    if arr.ndim == 1:
        return pd.DataFrame({"score": arr}), "array", None
    if arr.ndim == 2 and arr.dtype.kind in "biuf":
        return pd.DataFrame(arr, columns=[f"score{i}" for i in range(arr.shape[1])]), "array", None
    raise DataError(
        "scores: give a DataFrame, a dict of arrays, a 1-D array or a CSV / Parquet / NPZ file"
    )


def _read(path: Path) -> tuple[pd.DataFrame, str, str]:
    from privguard.data.files import read_table
    from privguard.data.user import TABLE_SUFFIXES

    if not path.is_file():
        raise DataError(f"no scores file {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    low = path.name.lower()
    if low.endswith(TABLE_SUFFIXES):
        return read_table(path), str(path), digest
    if low.endswith(".npz"):
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(
                f"could not read {path} as NPZ ({type(e).__name__}); save numeric arrays with "
                "numpy.savez (object arrays are never unpickled)"
            ) from None
        bad = [k for k, v in arrays.items() if v.ndim != 1]
        if bad:
            raise DataError(f"{path}: arrays {join_names(bad)} are not one value per record")
        try:
            return pd.DataFrame(arrays), str(path), digest
        except ValueError:
            sizes = {k: len(v) for k, v in arrays.items()}
            raise DataError(f"{path}: the arrays have different lengths {sizes}") from None
    raise DataError(
        f"cannot tell the kind of {path} from its name; give a .csv, .tsv, .parquet or .npz file"
    )


def _flags(col: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=bool)
    if col.isna().any():
        raise DataError(f"{int(col.isna().sum())} record(s) have no {name} flag; drop them")
    if pd.api.types.is_numeric_dtype(col):
        v = col.to_numpy(dtype=np.float64)
        if not np.isin(v, (0.0, 1.0)).all():
            raise DataError(f"the {name} column must be 0/1 or true/false, not e.g. {v.max():g}")
        return v == 1.0
    words = col.astype(str).str.strip().str.lower()
    odd = sorted(set(words) - TRUE - FALSE)
    if odd:
        raise DataError(f"the {name} column must be true/false or 1/0; it also holds {odd[:3]}")
    return words.isin(TRUE).to_numpy()


def _score_columns(
    frame: pd.DataFrame, member_column: str, columns: Iterable[str] | None
) -> list[str]:
    if columns is not None:
        names = [str(c) for c in columns]
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise DataError(
                f"no score column(s) {join_names(missing)}; the columns are "
                f"{join_names(frame.columns)}"
            )
    else:
        names = [
            str(c)
            for c in frame.columns
            if c != member_column
            and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])
        ]
    if not names:
        raise DataError(
            f"no numeric score column besides {member_column!r}; columns: "
            f"{join_names(frame.columns)}"
        )
    return names
