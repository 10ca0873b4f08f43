"""make_split: disjoint, stratified, seeded roles."""

from __future__ import annotations

import numpy as np
import pytest

from privguard.data import Split, load_dataset, make_split
from privguard.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def y() -> np.ndarray:
    return load_dataset("digits").y


def test_split_is_disjoint_and_complete(y: np.ndarray) -> None:
    s = make_split(y, seed=0, validation_fraction=0.2)
    parts = [s.members, s.nonmembers, s.aux, s.validation]
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx) == len(y)
    s.check(len(y))
    assert abs(len(s.members) + len(s.validation) - 0.4 * len(y)) < 10
    assert abs(len(s.nonmembers) - 0.3 * len(y)) < 10


def test_split_is_stratified(y: np.ndarray) -> None:
    s = make_split(y, seed=1)
    overall = np.bincount(y) / len(y)
    for role in (s.members, s.nonmembers, s.aux):
        share = np.bincount(y[role], minlength=10) / len(role)
        assert np.abs(share - overall).max() < 0.005


def test_split_is_seeded(y: np.ndarray) -> None:
    a, b, c = make_split(y, seed=7), make_split(y, seed=7), make_split(y, seed=8)
    assert np.array_equal(a.members, b.members) and np.array_equal(a.aux, b.aux)
    assert not np.array_equal(a.members, c.members)
    back = Split.from_dict(a.to_dict())
    for role in ("members", "nonmembers", "aux", "validation"):
        assert np.array_equal(getattr(back, role), getattr(a, role))
    assert back.seed == 7


def test_split_errors() -> None:
    with pytest.raises(ConfigError, match="leaves no auxiliary data"):
        make_split(np.zeros(100, dtype=np.int64), seed=0, member_fraction=0.7)
    with pytest.raises(DataError, match="too few to split"):
        make_split(np.array([0, 1, 0, 1]), seed=0)
    s = make_split(np.repeat(np.arange(2), 50), seed=0)
    with pytest.raises(DataError, match="beyond the 50"):
        s.check(50)
