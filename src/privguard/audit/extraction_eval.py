"""Scoring a stolen model against the real one (only this module sees the real model).

Metrics (docs/metrics.md, "Extraction"):

- ``fidelity``: share of held-out records (the non-members) on which the stolen model predicts
  the target's label (Jagielski et al., "High Accuracy and High Fidelity Extraction of Neural
  Networks", USENIX Security 2020, call this label agreement); ``fidelity_uniform``: the same on
  inputs drawn uniformly within the data's bounds (Tramèr et al. 2016's second test set);
  ``fidelity_baseline``: the agreement of a constant guess, the target's most frequent
  held-out label (what a copy must beat to have learned anything).
- ``accuracy`` / ``target_accuracy``: the stolen and the real model on the held-out labels.
- ``queries``: oracle queries the attack spent; ``queries_to_95_fidelity``: the first
  checkpoint at which fidelity reached 0.95 (absent when it never did).
- ``max_parameter_error`` (linear targets): the largest absolute difference between the
  recovered and the true identifiable parameters, the logit differences to class 0.

Curves: ``fidelity_vs_queries`` (held-out fidelity of the substitute at every checkpoint the
attack kept; the attack never saw these records).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privguard.attacks.base import ExtractionGuesses
from privguard.data import Dataset, Split

N_UNIFORM = 2000
FIDELITY_MARK = 0.95


class ExtractionEvaluator:
    """Holds the real model and the held-out data; scores :class:`ExtractionGuesses`.

    Example:
        >>> ev = ExtractionEvaluator(target, ds, target.split, seed=0)
        >>> metrics, curves, notes = ev.evaluate(guesses)
    """

    def __init__(self, target: Any, ds: Dataset, split: Split, seed: int = 0) -> None:
        self.target = target
        self.x_eval = ds.x[split.nonmembers]
        self.y_eval = ds.y[split.nonmembers]
        rng = np.random.default_rng(seed + 7919)
        lo, hi = ds.bounds
        self.x_uniform = rng.uniform(lo, hi, size=(N_UNIFORM, *ds.input_shape)).astype(np.float32)
        self.t_eval = _labels(target.predictor, self.x_eval)
        self.t_uniform = _labels(target.predictor, self.x_uniform)
        self.true_parameters = true_logit_differences(target)

    def evaluate(self, guesses: ExtractionGuesses) -> tuple[dict[str, float], dict, list[str]]:
        stolen = guesses.model
        s_eval = _labels(stolen, self.x_eval)
        counts = np.bincount(self.t_eval, minlength=self.target.n_classes)
        metrics: dict[str, float] = {
            "fidelity": _mean(s_eval == self.t_eval),
            "fidelity_uniform": _mean(_labels(stolen, self.x_uniform) == self.t_uniform),
            "fidelity_baseline": float(counts.max() / max(len(self.t_eval), 1)),
            "accuracy": _mean(s_eval == self.y_eval),
            "target_accuracy": _mean(self.t_eval == self.y_eval),
            "queries": int(guesses.queries),
            "n_eval": len(self.x_eval),
        }
        notes: list[str] = []
        xs, ys = [], []
        for queries, model in guesses.checkpoints:
            xs.append(int(queries))
            ys.append(_mean(_labels(model, self.x_eval) == self.t_eval))
        reached = [q for q, f in zip(xs, ys, strict=True) if f >= FIDELITY_MARK]
        if reached:
            metrics["queries_to_95_fidelity"] = int(reached[0])
        elif xs:
            notes.append(f"fidelity never reached {FIDELITY_MARK:.2f} within {xs[-1]:,} queries")
        if guesses.parameters is not None:
            if self.true_parameters is not None and (
                self.true_parameters.shape == guesses.parameters.shape
            ):
                err = np.abs(np.asarray(guesses.parameters) - self.true_parameters).max()
                metrics["max_parameter_error"] = float(err)
            else:
                notes.append(
                    "the target's parameters are not those of a softmax regression (or not "
                    "readable): no parameter error"
                )
        curves: dict[str, Any] = {}
        if xs:
            curves["fidelity_vs_queries"] = {
                "x": xs,
                "y": ys,
                "xlabel": "queries",
                "ylabel": "fidelity on held-out records",
                "logx": len(xs) > 2,
            }
        return metrics, curves, notes


def true_logit_differences(target: Any) -> np.ndarray | None:
    """The identifiable parameters of a softmax-regression target, ``(k - 1, d + 1)``: each
    class's weights and bias minus class 0's. ``None`` for any other model."""
    est = getattr(target, "estimator", None)
    if est is not None:
        coef = getattr(est, "coef_", None)
        intercept = getattr(est, "intercept_", None)
        if coef is None or intercept is None or type(est).__name__ != "LogisticRegression":
            return None
        if getattr(est, "multi_class", "auto") == "ovr":
            return None  # one-vs-rest probabilities are not a softmax of linear scores
        w = np.c_[np.asarray(coef, np.float64), np.asarray(intercept, np.float64)]
        if len(w) == 1:  # binary: p_1 = sigmoid(w . x + b), the difference to class 0
            return w
        return (w - w[0])[1:]
    if getattr(target, "kind", None) == "torch" and target.architecture.get("type") == "logreg":
        layer = target.predictor.module[1]
        w = np.c_[layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()]
        return (w - w[0])[1:]
    return None


def stolen_target(target: Any, guesses: ExtractionGuesses, attack: str, metrics: dict) -> Any:
    """The stolen model as a :class:`~privguard.models.Target` that can be saved as a model
    directory and audited like any other (the extraction -> inversion chain).

    It records the original target's data and split, which belong to the auditor: an audit of
    the stolen model then scores attacks against the real training records. It has no training
    recipe (it was not trained the target's way)."""
    from privguard.models import Target

    return Target(
        guesses.model,
        kind="torch",
        architecture=guesses.architecture,
        dataset=target.dataset,
        split=target.split,
        metrics={
            "stolen_by": attack,
            "stolen_from": str(target.path) if target.path else None,
            "queries": int(guesses.queries),
            "learned_from": guesses.outputs,
            "fidelity": metrics.get("fidelity"),
            "accuracy": metrics.get("accuracy"),
        },
    )


def _labels(predictor: Any, x: np.ndarray) -> np.ndarray:
    return np.argmax(predictor.predict_proba(x), axis=1)


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else float("nan")
