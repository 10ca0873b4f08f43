"""The no-model baseline of attribute inference: the best guess of a hidden field from the
auxiliary data alone, and P(value | other features) for the ``aux-model`` prior.

What a model leaks about a sensitive field is what the attacks in
:mod:`privguard.attacks.inversion.attribute` get right *beyond* this baseline (see that module
for the threat model and the papers): a logistic regression trained on the auxiliary records to
predict the field from the other features and the label, or the auxiliary marginal's most
common value when that predicts no better under the attacker's own cross-validation (or cannot
be fitted). No model queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privguard.attacks.base import Knowledge, SensitiveAttribute
from privguard.errors import ConfigError, DataError

CV_FOLDS = 3
CV_MAX_RECORDS = 4000  # the baseline's model choice is cross-validated on at most this many


@dataclass
class Baseline:
    """The no-model baseline for one sensitive field: its guesses for the partial records, the
    field's (add-one smoothed) marginal in the auxiliary data, and what was done."""

    guesses: np.ndarray
    prior: np.ndarray
    notes: list[str]


def aux_baseline(knowledge: Knowledge) -> Baseline:
    """The best guess of the hidden field from the auxiliary data alone (no model queries).

    A multinomial logistic regression on the auxiliary records predicts the field from the other
    features and the one-hot label; it is used when its accuracy under ``CV_FOLDS``-fold
    cross-validation on the auxiliary records is at least that of always guessing the marginal's
    mode, else the mode is guessed (also when the regression cannot be fitted: a single value in
    the auxiliary data, too few records).

    Example:
        >>> base = aux_baseline(knowledge)
        >>> base.guesses          # value index per partial record
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    sens = _require_sensitive(knowledge)
    aux_x = _flat(knowledge.aux_x)
    if aux_x.shape[1] != _flat(knowledge.partial_x).shape[1]:
        raise DataError(
            f"auxiliary records have {aux_x.shape[1]} features but the partial records "
            f"{_flat(knowledge.partial_x).shape[1]}; both must be encoded the same way"
        )
    if not np.isfinite(aux_x).all():
        raise DataError(
            "the auxiliary records contain NaN or infinite values; attribute inference needs "
            "complete auxiliary records (with the sensitive field)"
        )
    aux_v = sens.decode(aux_x)
    n_values = len(sens.values)
    counts = np.bincount(aux_v, minlength=n_values).astype(np.float64)
    prior = (counts + 1.0) / (counts.sum() + n_values)
    mode = int(np.argmax(counts))
    n = len(knowledge.partial_y)
    mode_guess = np.full(n, mode, dtype=np.int64)
    mode_note = (
        f"no-model baseline: always {sens.values[mode]!r}, the most common {sens.name} value "
        f"among the {len(aux_v)} auxiliary records ({counts[mode] / counts.sum():.1%})"
    )

    n_labels = int(max(np.max(knowledge.aux_y), np.max(knowledge.partial_y))) + 1
    x_fit = _baseline_features(aux_x, np.asarray(knowledge.aux_y), sens, n_labels)
    x_use = _baseline_features(
        _flat(knowledge.partial_x), np.asarray(knowledge.partial_y), sens, n_labels
    )
    present = counts[counts > 0]
    if len(present) < 2:
        return Baseline(mode_guess, prior, [mode_note + " (a single value in the auxiliary data)"])

    import warnings

    def make() -> LogisticRegression:
        return LogisticRegression(max_iter=1000, tol=1e-3)

    cv_note = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            if present.min() >= CV_FOLDS:
                rng = np.random.default_rng(knowledge.seed)
                idx = np.arange(len(aux_v))
                if len(idx) > CV_MAX_RECORDS:
                    idx = np.sort(rng.choice(idx, CV_MAX_RECORDS, replace=False))
                folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=knowledge.seed)
                cv_acc = float(cross_val_score(make(), x_fit[idx], aux_v[idx], cv=folds).mean())
                mode_acc = float((aux_v[idx] == mode).mean())
                cv_note = (
                    f" ({CV_FOLDS}-fold cross-validated accuracy on the auxiliary records "
                    f"{cv_acc:.3f}, vs {mode_acc:.3f} for the most common value)"
                )
                if cv_acc < mode_acc:
                    return Baseline(mode_guess, prior, [mode_note + cv_note])
            clf = make().fit(x_fit, aux_v)
        except ValueError as e:
            return Baseline(
                mode_guess, prior, [f"{mode_note} (the logistic regression failed: {e})"]
            )
    guesses = clf.classes_[clf.predict_proba(x_use).argmax(axis=1)].astype(np.int64)
    note = (
        f"no-model baseline: a logistic regression trained on the {len(aux_v)} auxiliary records "
        f"predicts {sens.name} from the other features and the label{cv_note}"
    )
    return Baseline(guesses, prior, [note])


def _baseline_features(
    x: np.ndarray, y: np.ndarray, sens: SensitiveAttribute, n_labels: int
) -> np.ndarray:
    keep = np.setdiff1d(np.arange(x.shape[1]), sens.columns)
    return np.hstack([x[:, keep], np.eye(n_labels)[y]]).astype(np.float64)


def aux_value_model(knowledge: Knowledge, marginal: np.ndarray) -> np.ndarray:
    """P(value | the record's other features) for each partial record, ``(values, n)``: a
    logistic regression on the auxiliary records (features only, not the label), mixed with a
    little of the smoothed ``marginal`` so that no value is impossible; the marginal alone when
    the regression cannot be fitted."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    sens = _require_sensitive(knowledge)
    aux_x, part = _flat(knowledge.aux_x), _flat(knowledge.partial_x)
    keep = np.setdiff1d(np.arange(aux_x.shape[1]), sens.columns)
    aux_v = sens.decode(aux_x)
    out = np.repeat(marginal[:, None], len(part), axis=1)
    if len(np.unique(aux_v)) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            clf = LogisticRegression(max_iter=1000, tol=1e-3).fit(aux_x[:, keep], aux_v)
        except ValueError:
            return out
    p = np.zeros_like(out)
    p[clf.classes_] = clf.predict_proba(part[:, keep].astype(np.float64)).T
    w = 1.0 / (len(aux_v) + len(marginal))
    return (1.0 - w) * p + w * out


def _require_sensitive(knowledge: Knowledge) -> SensitiveAttribute:
    if knowledge.sensitive is None:
        raise ConfigError("attribute inference needs a sensitive field: pass --sensitive NAME")
    if knowledge.partial_x is None or knowledge.partial_y is None:
        raise ConfigError(
            "attribute inference needs the partial records (sensitive field hidden) and their "
            "labels: set Knowledge.partial_x and partial_y"
        )
    return knowledge.sensitive


def _flat(x: np.ndarray | None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(len(x), -1)
