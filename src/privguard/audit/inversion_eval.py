"""Scoring model-inversion reconstructions against the data only the auditor holds.

The field's standard measure is **attack accuracy**: an independent evaluation classifier,
trained by the auditor on all of the data with an architecture unlike the target's, labels each
reconstruction; the attack succeeds on a class when the evaluator sees that class (Zhang et al.,
CVPR 2020). One evaluator can be fooled: pixel-space reconstructions often carry adversarial
noise that one classifier reads as the class while another does not (shared/PAPERS.md). privguard
therefore uses two evaluators of different families — an RBF support-vector machine and a pixel
5-nearest-neighbour vote — and reports each and their consensus.

Recovering what a class looks like is not the same as recovering training records. The
**member closeness** asks whether a reconstruction is nearer to the training members of its
class than to people outside the training set: for equal-size random sets of members and
non-members of the class, the fraction of reconstructions whose nearest member is nearer than
their nearest non-member (0.5 = no member-specific signal), averaged over several draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

from privguard.attacks.base import InversionGuesses
from privguard.data import Dataset, Split

CLOSENESS_DRAWS = 20
MEMBER_SIGNAL = 0.6  # member closeness from which "training records recovered" is claimed
SIGNIFICANCE = 0.05  # ... when a binomial test also rejects "no member signal" at this level


class InversionEvaluator:
    """Independent classifiers fitted on all of ``ds`` (built once per audit)."""

    def __init__(self, ds: Dataset, split: Split, seed: int = 0) -> None:
        self.ds, self.split, self.seed = ds, split, seed
        flat = ds.x.reshape(len(ds), -1)
        self.svm_ = SVC(kernel="rbf", gamma="scale", C=10.0).fit(flat, ds.y)
        self.knn_ = KNeighborsClassifier(n_neighbors=5).fit(flat, ds.y)

    def evaluate(self, g: InversionGuesses) -> tuple[dict[str, float], dict[str, Any], list[str]]:
        ds, split = self.ds, self.split
        rec = np.asarray(g.reconstructions, dtype=np.float32)
        labels = np.asarray(g.labels, dtype=np.int64)
        flat = rec.reshape(len(rec), -1).astype(np.float64)
        scores = self.svm_.decision_function(flat)
        if scores.ndim == 1:  # binary: one column, positive = class 1
            scores = np.stack([-scores, scores], axis=1)
        order = np.argsort(-scores, axis=1)
        svm_ok = order[:, 0] == labels
        top5 = (order[:, : min(5, ds.n_classes)] == labels[:, None]).any(axis=1)
        knn_ok = self.knn_.predict(flat) == labels

        xall = ds.x.reshape(len(ds), -1).astype(np.float64)
        members, nonmembers = split.members, split.nonmembers
        rng = np.random.default_rng(self.seed)
        mse, ssim, d_mem, d_non, close = [], [], [], [], []
        for r, c in zip(flat, labels, strict=True):
            mem_c = members[ds.y[members] == c]
            non_c = nonmembers[ds.y[nonmembers] == c]
            mean_c = xall[mem_c].mean(axis=0)
            mse.append(float(((r - mean_c) ** 2).mean()))
            if ds.kind == "image":
                ssim.append(_ssim(r.reshape(ds.input_shape), mean_c.reshape(ds.input_shape), ds))
            dm = np.sqrt(((xall[mem_c] - r) ** 2).sum(axis=1))
            dn = np.sqrt(((xall[non_c] - r) ** 2).sum(axis=1))
            d_mem.append(float(dm.min()))
            d_non.append(float(dn.min()))
            close.append(_closeness(dm, dn, rng))
        m: dict[str, float] = {
            "attack_accuracy": _mean(svm_ok),
            "attack_accuracy_top5": _mean(top5),
            "attack_accuracy_knn": _mean(knn_ok),
            "attack_accuracy_consensus": _mean(svm_ok & knn_ok),
            "mse_to_class_mean": round(float(np.mean(mse)), 6),
            "nearest_member_distance": round(float(np.mean(d_mem)), 6),
            "nearest_nonmember_distance": round(float(np.mean(d_non)), 6),
            "member_closeness": round(float(np.mean(close)), 6),
            "member_closeness_pvalue": round(_closeness_pvalue(close), 6),
            "n_reconstructions": len(rec),
        }
        if ssim:
            m["ssim_to_class_mean"] = round(float(np.mean(ssim)), 6)
        if g.queries_per_class:
            m["queries_per_class"] = round(float(np.mean(g.queries_per_class)), 1)
        notes = _verdict(m)
        curves: dict[str, Any] = {}
        if ds.kind == "image":
            names = [ds.classes[c] for c in labels]
            means = np.stack([xall[members[ds.y[members] == c]].mean(axis=0) for c in labels])
            curves["reconstructions"] = {"images": _rounded(rec), "labels": names}
            curves["class_means"] = {
                "images": _rounded(means.reshape(rec.shape)),
                "labels": [f"mean {n}" for n in names],
            }
        return m, curves, notes


def _verdict(m: dict[str, float]) -> list[str]:
    notes = []
    if m["attack_accuracy"] - m["attack_accuracy_consensus"] >= 0.2:
        notes.append(
            "the evaluators disagree: the SVM recognises more reconstructions than the pixel "
            "k-NN does, a sign of adversarial noise rather than recovered content; trust the "
            "consensus figure"
        )
    recovered = m["attack_accuracy_consensus"] >= 0.5
    if recovered and member_signal(m):
        notes.append(
            f"training records recovered: reconstructions are nearer to training members than "
            f"to non-members of their class (member closeness {m['member_closeness']:.2f})"
        )
    elif recovered:
        notes.append(
            "class representatives recovered: reconstructions show what each class looks like "
            f"but are no nearer to training members than to outsiders (member closeness "
            f"{m['member_closeness']:.2f}, 0.5 = none). Where a class is one person (faces), "
            "that is still that person's likeness"
        )
    else:
        notes.append("the evaluators do not recognise most reconstructions: little was recovered")
    return notes


def member_signal(m: dict[str, float]) -> bool:
    """Training records recovered: closeness clearly above 0.5 and unlikely under chance."""
    return (
        m.get("member_closeness", 0.5) >= MEMBER_SIGNAL
        and m.get("member_closeness_pvalue", 1.0) < SIGNIFICANCE
    )


def _closeness_pvalue(close: list[float]) -> float:
    """One-sided binomial test of "nearer to members" wins against 0.5 (no member signal).

    With ten reconstructions, chance alone gives a closeness of 0.6-0.8 for one seed in several;
    the claim that training records were recovered needs more than that."""
    from scipy.stats import binomtest

    n = len(close)
    if n == 0:
        return 1.0
    wins = int(round(float(np.sum(close))))
    return float(binomtest(wins, n, 0.5, alternative="greater").pvalue)


def _closeness(dm: np.ndarray, dn: np.ndarray, rng: np.random.Generator) -> float:
    """P(nearest of k members < nearest of k non-members), k = the smaller set's size."""
    k = min(len(dm), len(dn))
    if k == 0:
        return 0.5
    wins = 0.0
    for _ in range(CLOSENESS_DRAWS):
        a = dm[rng.choice(len(dm), k, replace=False)].min()
        b = dn[rng.choice(len(dn), k, replace=False)].min()
        wins += 1.0 if a < b else 0.5 if a == b else 0.0
    return wins / CLOSENESS_DRAWS


def _ssim(a: np.ndarray, b: np.ndarray, ds: Dataset) -> float:
    from skimage.metrics import structural_similarity

    lo, hi = ds.bounds
    a2, b2 = np.moveaxis(a, 0, -1), np.moveaxis(b, 0, -1)  # (h, w, c)
    win = min(7, *a2.shape[:2]) // 2 * 2 + 1 if min(a2.shape[:2]) >= 3 else 3
    return float(
        structural_similarity(a2, b2, data_range=hi - lo, channel_axis=-1, win_size=min(win, 7))
    )


def _mean(ok: np.ndarray) -> float:
    return round(float(np.mean(ok)), 6) if len(ok) else 0.0


def _rounded(x: np.ndarray) -> list:
    return np.round(np.asarray(x, dtype=np.float64), 3).tolist()
