"""What only the auditor holds: the truth the families' evaluators score guesses against.

The engine builds one truth object per audit and hands it to each family's evaluator factory
(:mod:`privguard.audit.families`); attacks never see it. :class:`ClassifierTruth` serves image
and tabular models (and endpoints), :class:`TextTruth` text models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privguard.attacks import Knowledge
from privguard.audit.report import AttackResult
from privguard.data import Dataset, Split
from privguard.errors import ConfigError

TOP_RECORDS = 20  # most exposed members listed in the report


@dataclass
class ClassifierTruth:
    """What only the auditor knows about a classifier audit: the split, who of the candidates
    is a member, the hidden values of attribute inference, the real model.

    ``members_known`` is ``False`` for an endpoint audited without its model directory: the
    split is then a seeded split of the attacker's data and says nothing about training."""

    ds: Dataset
    split: Split
    seed: int
    candidates: np.ndarray
    is_member: np.ndarray
    hidden_values: np.ndarray | None = None
    value_names: list[str] = field(default_factory=list)
    # candidates whose sensitive value is missing: left out of attribute scores, counted
    hidden_missing: np.ndarray | None = None
    target: Any = None  # the real model (the extraction evaluator compares copies with it)
    audited: Any = None  # the Target as audited (an endpoint's, for a stolen copy's record)
    members_known: bool = True
    redact: bool = False  # leave record field values out of most_exposed

    @classmethod
    def build(cls, ds: Dataset, split: Split, seed: int) -> ClassifierTruth:
        rng = np.random.default_rng(seed)
        cand = np.concatenate([split.members, split.nonmembers])
        cand = cand[rng.permutation(len(cand))]
        return cls(ds, split, seed, cand, np.isin(cand, split.members))

    def knowledge(
        self, target: Any, ds: Dataset, sensitive: str | None, *, needs_sensitive: bool
    ) -> Knowledge:
        split, cand = self.split, self.candidates
        know = Knowledge(
            aux_x=ds.x[split.aux],
            aux_y=ds.y[split.aux],
            candidates_x=ds.x[cand],
            candidates_y=ds.y[cand],
            recipe=target.recipe,
            bounds=ds.bounds,
            seed=self.seed,
            kind=ds.kind,
            class_names=list(ds.classes),
        )
        if ds.kind == "tabular" and (needs_sensitive or sensitive):
            from privguard.audit.sensitive import (
                default_sensitive,
                missing_records,
                sensitive_attribute,
            )

            name = sensitive or default_sensitive(ds)
            if name is not None:
                attr = sensitive_attribute(ds, name)
                flat = ds.x[cand].reshape(len(cand), -1)
                self.hidden_values, self.value_names = attr.decode(flat), list(attr.values)
                self.hidden_missing = missing_records(ds, attr, cand)
                partial = flat.copy()
                partial[:, attr.columns] = np.nan
                know.sensitive, know.partial_x, know.partial_y = attr, partial, ds.y[cand]
        elif sensitive:
            raise ConfigError("--sensitive applies to tabular data only")
        return know

    def score_table(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every candidate's score under every membership attack (OUT/artifacts)."""
        table = {
            "index": self.candidates,
            "label": self.ds.y[self.candidates],
            "is_member": self.is_member,
        }
        table.update({f"score_{name}": s for name, s in scores.items()})
        return table

    def most_exposed(
        self, results: list[AttackResult], scores: dict[str, np.ndarray], top: int = TOP_RECORDS
    ) -> dict[str, Any]:
        """The members the strongest membership attack singles out most confidently.

        Strongest = highest TPR at 1% FPR, then AUC. For each member, ``exposed_at_fpr`` is the
        share of non-members scoring at least as high: the false-positive rate an attacker must
        accept to flag that person (0 = flagged with no false positive at all)."""
        ranked = [r for r in results if r.name in scores]
        best = max(ranked, key=lambda r: (r.metrics["tpr_at_fpr_0.01"], r.metrics["auc"]))
        s = scores[best.name]
        non = np.sort(s[~self.is_member])
        members = np.flatnonzero(self.is_member)
        order = members[np.argsort(-s[members], kind="stable")][:top]
        records = []
        for i in order:
            at_least = len(non) - np.searchsorted(non, s[i], side="left")
            records.append(
                {
                    "index": int(self.candidates[i]),
                    "class": self.ds.classes[int(self.ds.y[self.candidates[i]])],
                    "score": float(s[i]),
                    "exposed_at_fpr": round(at_least / max(len(non), 1), 6),
                }
            )
            if not self.redact:
                fields = record_fields(self.ds, int(self.candidates[i]))
                if fields:
                    records[-1]["fields"] = fields
        return {"attack": best.name, "records": records}


def record_fields(ds: Any, i: int) -> dict[str, Any]:
    """Record ``i``'s field values as the data file had them (tabular data: numeric columns
    back from their [0, 1] scaling, one-hot blocks back to their category, kept raw columns);
    empty for images. A missing numeric value shows as the median it was filled with."""
    pre = ds.preprocessing if isinstance(getattr(ds, "preprocessing", None), dict) else {}
    if ds.kind != "tabular" or pre.get("type") != "tabular":
        return {}
    x = np.asarray(ds.x[i], dtype=np.float64).ravel()
    out: dict[str, Any] = {}
    numeric = pre.get("numeric") or []
    for j, c in enumerate(numeric):
        v = round(c["min"] + float(x[j]) * (c["max"] - c["min"]), 4)
        out[c["name"]] = int(v) if v.is_integer() else v
    at = len(numeric)
    for c in pre.get("categorical") or []:
        k = len(c["categories"])
        block = x[at : at + k]
        out[c["name"]] = c["categories"][int(np.argmax(block))] if k else None
        at += k
    for name, values in (getattr(ds, "extra", None) or {}).items():
        v = values[i]  # a raw column kept beside the encoding: shown as in the file
        out[name] = v.item() if hasattr(v, "item") else v
    return out


@dataclass
class TextTruth:
    """What only the auditor knows about a text model: the inserted canaries (and how often)
    and the training corpus (``None`` when not given)."""

    canaries: Sequence[Any]
    corpus: Any
    seed: int = 0
    members_known: bool = True
    redact: bool = False  # leave record field values out of most_exposed


@dataclass
class DocumentTruth:
    """What only the auditor knows about a document membership audit of a language model:
    which candidate documents (in the shuffled order the attacks see) were fine-tuned on."""

    candidates: list[str]
    is_member: np.ndarray
    seed: int = 0
    members_known: bool = True
    canaries: Sequence[Any] = ()
    corpus: Any = None
    position: np.ndarray | None = None  # each candidate's position in its own file
    redact: bool = False  # documents' text stays out of the report either way

    @classmethod
    def build(cls, members: list[str], nonmembers: list[str], seed: int) -> DocumentTruth:
        docs = list(members) + list(nonmembers)
        flag = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
        where = np.r_[np.arange(len(members)), np.arange(len(nonmembers))]
        order = np.random.default_rng(seed).permutation(len(docs))
        return cls([docs[i] for i in order], flag[order], seed, position=where[order])

    def score_table(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every candidate's score under every document membership attack (OUT/artifacts)."""
        table = {"index": np.arange(len(self.candidates)), "is_member": self.is_member}
        table.update({f"score_{name}": s for name, s in scores.items()})
        return table

    def most_exposed(
        self, results: list[AttackResult], scores: dict[str, np.ndarray], top: int = TOP_RECORDS
    ) -> dict[str, Any]:
        """The member documents the strongest attack singles out most confidently
        (``member_document``: its position in the members file, from 0; ``index``: among the
        shuffled candidates; ``exposed_at_fpr`` as for classifier records)."""
        ranked = [r for r in results if r.name in scores and "tpr_at_fpr_0.01" in r.metrics]
        if not ranked:
            return {"attack": None, "records": []}
        best = max(ranked, key=lambda r: (r.metrics["tpr_at_fpr_0.01"], r.metrics["auc"]))
        s = scores[best.name]
        non = np.sort(s[~self.is_member])
        members = np.flatnonzero(self.is_member)
        records = []
        for i in members[np.argsort(-s[members], kind="stable")][:top]:
            at_least = len(non) - np.searchsorted(non, s[i], side="left")
            records.append(
                {
                    "index": int(i),
                    "member_document": int(self.position[i]) if self.position is not None else None,
                    "class": "document",  # the report's table column (records have a class)
                    "score": float(s[i]),
                    "exposed_at_fpr": round(at_least / max(len(non), 1), 6),
                }
            )
        return {"attack": best.name, "records": records}
