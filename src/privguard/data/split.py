"""Seeded split of a dataset into the roles of a membership experiment.

- ``members``: the target's training set;
- ``nonmembers``: held out, never trained on, used by the evaluator (and as the test set);
- ``aux``: the attacker's auxiliary pool from the same population, disjoint from both;
- ``validation``: carved from the member share when early stopping needs it; neither a member
  nor a non-member for evaluation.

The split is stratified by label and recorded (indices) with the trained model, so an audit
evaluates exactly the records the model did and did not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from privguard.errors import ConfigError, DataError


@dataclass(frozen=True, eq=False)
class Split:
    members: np.ndarray
    nonmembers: np.ndarray
    aux: np.ndarray
    validation: np.ndarray
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "members": self.members.tolist(),
            "nonmembers": self.nonmembers.tolist(),
            "aux": self.aux.tolist(),
            "validation": self.validation.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        return cls(
            members=np.asarray(d["members"], dtype=np.int64),
            nonmembers=np.asarray(d["nonmembers"], dtype=np.int64),
            aux=np.asarray(d["aux"], dtype=np.int64),
            validation=np.asarray(d.get("validation", []), dtype=np.int64),
            seed=int(d["seed"]),
        )

    def check(self, n: int) -> None:
        """Raise if the indices do not fit a dataset of ``n`` records or overlap."""
        parts = [self.members, self.nonmembers, self.aux, self.validation]
        allidx = np.concatenate(parts)
        if len(allidx) and (allidx.min() < 0 or allidx.max() >= n):
            raise DataError(
                f"the recorded split indexes records beyond the {n} in this data: "
                "audit with the data the model was trained on"
            )
        if len(np.unique(allidx)) != len(allidx):
            raise DataError("the recorded split has overlapping roles; retrain the model")


def make_split(
    y: np.ndarray,
    *,
    seed: int,
    member_fraction: float = 0.4,
    nonmember_fraction: float = 0.3,
    validation_fraction: float = 0.0,
) -> Split:
    """Stratified split; the aux pool gets what members and non-members leave.

    ``validation_fraction`` is taken out of the member share (so members + validation =
    ``member_fraction`` of the data).
    """
    if not (0 < member_fraction < 1 and 0 < nonmember_fraction < 1):
        raise ConfigError("train and non-member fractions must lie strictly between 0 and 1")
    if member_fraction + nonmember_fraction >= 1:
        raise ConfigError(
            f"train fraction {member_fraction} + non-member fraction {nonmember_fraction} leaves "
            "no auxiliary data for the attacker; lower --train-fraction"
        )
    if not 0 <= validation_fraction < 0.5:
        raise ConfigError("the validation fraction must lie in [0, 0.5)")
    rng = np.random.default_rng(seed)
    roles: dict[str, list[np.ndarray]] = {"m": [], "n": [], "a": [], "v": []}
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        idx = idx[rng.permutation(len(idx))]
        k = len(idx)
        n_m = int(round(k * member_fraction))
        n_n = int(round(k * nonmember_fraction))
        n_v = int(round(n_m * validation_fraction))
        roles["v"].append(idx[:n_v])
        roles["m"].append(idx[n_v:n_m])
        roles["n"].append(idx[n_m : n_m + n_n])
        roles["a"].append(idx[n_m + n_n :])
    out = {r: np.sort(np.concatenate(v)).astype(np.int64) for r, v in roles.items()}
    if min(len(out["m"]), len(out["n"]), len(out["a"])) < 2:
        raise DataError(
            f"only {len(y)} records: too few to split into members, non-members and an "
            "auxiliary pool; use a larger dataset"
        )
    return Split(out["m"], out["n"], out["a"], out["v"], seed)
