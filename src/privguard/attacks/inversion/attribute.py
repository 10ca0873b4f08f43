"""Attribute inference: recover a hidden sensitive field of a person's record through the model.

Threat model. The attacker knows everything about a person's record except one sensitive field
(sex, race, marital status...), and also the person's label: Fredrikson et al. assume the
attacker knows the model's output for the person (a warfarin dose), Mehnaz et al. the true
label. It can query the model at ``probs`` access (``label`` for the label-only attack), and it
holds auxiliary records from the same population *with* the sensitive field
(``Knowledge.aux_x`` / ``aux_y``, never members or evaluated records). For each partial record
(``Knowledge.partial_x``, the sensitive columns NaN because nothing can be queried until the
attacker fills them in) it tries every possible value of the field, queries the model once per
value (one batched call per value over all records) and picks the value that best explains the
known label. What the model leaks is what these guesses get right *beyond* the best guess the
auxiliary data allows on its own, so every attack here also returns that **no-model baseline**
for the same records: a logistic regression trained on the auxiliary records to predict the
field from the other features and the label, or the auxiliary marginal's most common value when
that predicts no better under the attacker's own cross-validation (or cannot be fitted). Both
are computed from the auxiliary data alone; the evaluator (``privguard.audit.attribute_eval``)
scores both against the truth, separately on members and non-members, since leakage specific to
training members is the privacy harm. The baseline is in
:mod:`privguard.attacks.inversion.attribute_baseline`.

Attacks:

- ``fredrikson-map``: Fredrikson, Lantz, Jha, Lin, Page, Ristenpart, "Privacy in
  Pharmacogenetics: An End-to-End Case Study of Personalized Warfarin Dosing", USENIX Security
  2014. The maximum a posteriori value argmax_v P(model output = known label | known features,
  v) * prior(v). The paper's estimator weighs the label the model predicts for each filled-in
  record by the model's published confusion statistics, pi(known label, predicted label); with
  ``probs`` access the model's own confidence in the known label is that likelihood. The prior
  is the field's marginal in the auxiliary data (add-one smoothed, so a value absent from the
  auxiliary pool is unlikely but not impossible). ``FredriksonMAP(prior="aux-model")`` replaces
  it by P(value | the record's other features) from a logistic regression on the auxiliary
  records: a stronger attacker than the paper's, whose advantage over the baseline isolates
  what the model adds to what the population already tells.
- ``confidence-inference``: the confidence score-based attack (CSMIA) of Mehnaz, Dibbo, Kabir,
  Li, Bertino, "Are Your Sensitive Attributes Private? Novel Model Inversion Attribute Inference
  Attacks on Classification Models", USENIX Security 2022. Query with every value filled in.
  Case 1: exactly one value makes the model predict the known label: take it. Case 2: several
  do: take the one whose prediction has the highest confidence. Case 3: none does: take the one
  whose (wrong) prediction has the lowest confidence. It uses no prior; ties (equal confidences)
  go to the value most common in the auxiliary data. The case counts are in the notes.
- ``label-only-inference``: the label-only attack (LOMIA) of the same paper, for ``label``
  access. Query with every value filled in; the records of case 1 (exactly one value gives the
  known label) are taken as labelled by that value and train an attack model (the paper used a
  BigML ensemble; here a random forest) on their other features and label, which then infers
  the field for every record, case 1 included, as in the authors' code.

Numerics: confidences are compared through log(p_y) = -log1p(sum_{j != y} p_j / p_y) and
-log(sum_{j != c} p_j), computed in float64 from the probability vector, so an overfit model
whose confidences round to 1.0 still ranks its candidate values (shared/PAPERS.md, "Loss
precision").

Query budget: the attack needs (records x values) queries. When the oracle's budget covers
fewer, the records it covers are attacked and the rest keep the baseline's guess (no advantage
on them), and the notes say how many.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from privguard.attacks.base import Attack, AttributeGuesses, Knowledge, Progress, SensitiveAttribute
from privguard.attacks.inversion.attribute_baseline import (
    Baseline,
    _baseline_features,
    _flat,
    _require_sensitive,
    aux_baseline,
    aux_value_model,
)
from privguard.attacks.registry import register
from privguard.errors import ConfigError, DataError
from privguard.oracle import Access, Oracle

TINY = 1e-300
PRIORS = ("marginal", "aux-model")


# -- the attacks --------------------------------------------------------------------------------


class _AttributeAttack(Attack):
    """Shared work: check the knowledge, fill in each value, query, keep the baseline beside."""

    family = "attribute"
    needs = Access.PROBS
    kinds = ("tabular",)

    @classmethod
    def unsuitable(cls, knowledge: Any) -> str | None:
        why = super().unsuitable(knowledge)
        if why is None and getattr(knowledge, "sensitive", None) is None:
            return f"the {cls.name} attack needs a sensitive field: pass --sensitive NAME"
        return why

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> AttributeGuesses:
        self.check_access(oracle)
        sens = _require_sensitive(knowledge)
        x, y = _check_partial(knowledge, sens, oracle)
        base: Baseline = knowledge.cached(
            f"attribute-baseline:{sens.name}", lambda: aux_baseline(knowledge)
        )
        n, n_values = len(y), len(sens.values)
        notes = list(base.notes)
        n_q = n
        if oracle.remaining is not None and oracle.remaining < n * n_values:
            n_q = max(oracle.remaining, 0) // n_values
            notes.append(
                f"query budget: {oracle.remaining} queries left cover {n_q} of {n} records "
                f"({n_values} queries each); the other {n - n_q} keep the baseline's guess"
            )
        values = base.guesses.copy()
        if n_q > 0:
            prior, prior_notes = self.prior(knowledge, base)
            probs = np.stack(
                [self._query(oracle, sens, x[:n_q], v, progress, n_values) for v in range(n_values)]
            )
            known = _baseline_features(x[:n_q], y[:n_q], sens, oracle.n_classes)
            chosen, more = self.decide(probs, y[:n_q], prior[:, :n_q], known, knowledge.seed)
            values[:n_q] = chosen
            notes += prior_notes + more
        return AttributeGuesses(values=values, baseline=base.guesses, notes=notes)

    def prior(self, knowledge: Knowledge, base: Baseline) -> tuple[np.ndarray, list[str]]:
        """The attacker's belief in each value before querying, ``(values, n)``: by default the
        value's marginal in the auxiliary data, the same for every record."""
        n = len(knowledge.partial_y)
        return np.repeat(base.prior[:, None], n, axis=1), []

    def _query(
        self,
        oracle: Oracle,
        sens: SensitiveAttribute,
        x: np.ndarray,
        value: int,
        progress: Progress | None,
        total: int,
    ) -> np.ndarray:
        if progress is not None:
            progress(f"{self.name}: {sens.name}={sens.values[value]}", value, total)
        filled = sens.fill(x, value).reshape(len(x), *oracle.input_shape)
        p = self.ask(oracle, filled)
        if progress is not None:
            progress(f"{self.name}: {sens.name}={sens.values[value]}", value + 1, total)
        return p

    def ask(self, oracle: Oracle, x: np.ndarray) -> np.ndarray:
        """The model's answer for records ``x``, as probability vectors ``(n, classes)``."""
        return np.asarray(oracle.proba(x), dtype=np.float64)

    @abstractmethod
    def decide(
        self,
        probs: np.ndarray,
        y: np.ndarray,
        prior: np.ndarray,
        known: np.ndarray,
        seed: int,
    ) -> tuple[np.ndarray, list[str]]:
        """Value index per record from ``probs`` ``(values, n, classes)``, the known labels
        ``y`` ``(n,)``, the prior ``(values, n)`` (see :meth:`prior`), the known part of each
        record (features other than the sensitive field, then the one-hot label) and the
        attack's seed; plus notes."""


@register
class FredriksonMAP(_AttributeAttack):
    name = "fredrikson-map"
    paper = (
        "Fredrikson et al., Privacy in Pharmacogenetics: An End-to-End Case Study of "
        "Personalized Warfarin Dosing, USENIX Security 2014"
    )
    description = (
        "Fill in each value of the sensitive field, take the one maximising the model's "
        "confidence in the known label times the value's prior from auxiliary data."
    )

    def __init__(self, *, prior: str = "marginal") -> None:
        if prior not in PRIORS:
            raise ConfigError(f"unknown prior {prior!r} for {self.name}; use one of: {PRIORS}")
        self.prior_kind = prior

    def prior(self, knowledge: Knowledge, base: Baseline) -> tuple[np.ndarray, list[str]]:
        if self.prior_kind == "marginal":
            return super().prior(knowledge, base)
        informed = knowledge.cached(
            f"attribute-value-model:{_require_sensitive(knowledge).name}",
            lambda: aux_value_model(knowledge, base.prior),
        )
        note = (
            "prior: each record's value probabilities given its other features, from a logistic "
            "regression on the auxiliary records (not the paper's marginal prior)"
        )
        return informed, [note]

    def decide(
        self,
        probs: np.ndarray,
        y: np.ndarray,
        prior: np.ndarray,
        known: np.ndarray,
        seed: int,
    ) -> tuple[np.ndarray, list[str]]:
        loglik = np.stack([log_confidence(p, y) for p in probs])  # (values, n)
        chosen = _argmax_ties_by_prior(loglik + np.log(prior), prior)
        prior_only = _argmax_ties_by_prior(np.log(prior), prior)
        flat = np.ptp(loglik, axis=0) == 0
        notes = [
            f"the model's likelihood moved the guess away from the prior's on "
            f"{int((chosen != prior_only).sum())} of {len(y)} records"
        ]
        if flat.any():
            notes.append(
                f"{int(flat.sum())} record(s) got the same confidence for every value "
                "(the prior decided)"
            )
        return chosen, notes


@register
class FredriksonMAPAux(FredriksonMAP):
    name = "fredrikson-map-aux"
    description = (
        "Fredrikson et al.'s MAP estimate with an informed prior: each record's value "
        "probabilities given its other features, learnt from the auxiliary records."
    )

    def __init__(self, *, prior: str = "aux-model") -> None:
        super().__init__(prior=prior)


@register
class ConfidenceInference(_AttributeAttack):
    name = "confidence-inference"
    paper = (
        "Mehnaz et al., Are Your Sensitive Attributes Private? Novel Model Inversion Attribute "
        "Inference Attacks on Classification Models, USENIX Security 2022 (CSMIA)"
    )
    description = (
        "Fill in each value of the sensitive field: the one value whose prediction is the known "
        "label, else the most confident correct one, else the least confident wrong one."
    )

    def decide(
        self,
        probs: np.ndarray,
        y: np.ndarray,
        prior: np.ndarray,
        known: np.ndarray,
        seed: int,
    ) -> tuple[np.ndarray, list[str]]:
        predicted = probs.argmax(axis=2)  # (values, n)
        match = predicted == y[None, :]
        n_match = match.sum(axis=0)
        # Case 2 ranks the matching values by confidence in the known label; case 3 ranks all
        # values by how unsure the model is of its (wrong) prediction.
        conf_known = np.stack([log_confidence(p, y) for p in probs])
        unsure_pred = np.stack(
            [-log_confidence(p, c) for p, c in zip(probs, predicted, strict=True)]
        )
        case2 = np.where(match, conf_known, -np.inf)
        chosen = np.where(
            n_match >= 1,
            _argmax_ties_by_prior(case2, prior),  # case 1 has a single finite entry
            _argmax_ties_by_prior(unsure_pred, prior),
        )
        n1, n2, n3 = int((n_match == 1).sum()), int((n_match >= 2).sum()), int((n_match == 0).sum())
        notes = [
            f"case 1 (exactly one value gives the known label): {n1} records; case 2 (several "
            f"do, highest confidence taken): {n2}; case 3 (none does, lowest confidence in the "
            f"wrong prediction taken): {n3}"
        ]
        return chosen.astype(np.int64), notes


@register
class LabelOnlyInference(_AttributeAttack):
    name = "label-only-inference"
    needs = Access.LABEL
    paper = (
        "Mehnaz et al., Are Your Sensitive Attributes Private? Novel Model Inversion Attribute "
        "Inference Attacks on Classification Models, USENIX Security 2022 (LOMIA)"
    )
    description = (
        "Label-only: records where exactly one value of the sensitive field gives the known "
        "label train an attack model, which then infers the field for every record."
    )

    def ask(self, oracle: Oracle, x: np.ndarray) -> np.ndarray:
        return np.eye(oracle.n_classes)[oracle.labels(x)]

    def decide(
        self,
        probs: np.ndarray,
        y: np.ndarray,
        prior: np.ndarray,
        known: np.ndarray,
        seed: int,
    ) -> tuple[np.ndarray, list[str]]:
        from sklearn.ensemble import RandomForestClassifier

        match = probs.argmax(axis=2) == y[None, :]
        single = match.sum(axis=0) == 1
        singled_out = match.argmax(axis=0)
        n1 = int(single.sum())
        fallback = _argmax_ties_by_prior(np.log(prior), prior)
        if len(np.unique(singled_out[single])) < 2:
            chosen = np.where(single, singled_out, fallback)
            note = (
                f"only {n1} record(s) had exactly one value giving the known label, holding "
                f"{len(np.unique(singled_out[single]))} distinct value(s): too few to train the "
                "attack model; those records take that value, the others the prior's most "
                "likely one"
            )
            return chosen.astype(np.int64), [note]
        model = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
        model.fit(known[single], singled_out[single])
        chosen = model.classes_[model.predict_proba(known).argmax(axis=1)]
        note = (
            f"attack model: a random forest trained on the {n1} of {len(y)} records for which "
            "exactly one value gave the known label, labelled with that value, predicts the "
            "field for every record from its other features and label"
        )
        return chosen.astype(np.int64), [note]


# -- helpers ------------------------------------------------------------------------------------


def log_confidence(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log p_y per row, float64, keeping resolution where p_y rounds to 1:
    -log1p(sum_{j != y} p_j / p_y)."""
    p = np.asarray(p, dtype=np.float64)
    rows = np.arange(len(y))
    py = np.clip(p[rows, y], TINY, 1.0)
    others = p.copy()
    others[rows, y] = 0.0
    rest = np.clip(others.sum(axis=1), 0.0, None)
    return -np.log1p(rest / py)


def _argmax_ties_by_prior(score: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """argmax over axis 0 of ``score`` ``(values, n)``; equal scores go to the value with the
    higher ``prior`` ``(values, n)`` (then the lower index)."""
    best = score.max(axis=0, keepdims=True)
    return np.where(score == best, prior, -np.inf).argmax(axis=0).astype(np.int64)


def _check_partial(
    knowledge: Knowledge, sens: SensitiveAttribute, oracle: Oracle
) -> tuple[np.ndarray, np.ndarray]:
    x = _flat(knowledge.partial_x)
    y = np.asarray(knowledge.partial_y, dtype=np.int64)
    d = int(np.prod(oracle.input_shape))
    if x.shape[1] != d:
        raise DataError(
            f"partial records have {x.shape[1]} features but the model takes {d}; encode them "
            "as the model's training data was"
        )
    if y.ndim != 1 or len(y) != len(x) or len(x) == 0:
        raise DataError(f"{len(x)} partial records but labels of shape {y.shape}")
    if y.min() < 0 or y.max() >= oracle.n_classes:
        raise DataError(f"partial-record labels must be class indices 0..{oracle.n_classes - 1}")
    cols = np.asarray(sens.columns)
    if cols.min() < 0 or cols.max() >= d:
        raise ConfigError(f"sensitive field {sens.name!r} names columns outside the {d} features")
    known = np.delete(x, cols, axis=1)
    if not np.isfinite(known).all():
        bad = int((~np.isfinite(known)).any(axis=1).sum())
        raise DataError(
            f"{bad} partial record(s) have NaN or infinite values outside the sensitive field "
            f"{sens.name!r}; the attacker must know every other feature"
        )
    return x, y


__all__ = ["ConfidenceInference", "FredriksonMAP", "log_confidence"]
