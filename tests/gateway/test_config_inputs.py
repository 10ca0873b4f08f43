"""Tier configuration and request validation (no server needed)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import numpy as np
import pytest

from privguard.errors import ConfigError
from privguard.gateway.config import GatewayConfig
from privguard.gateway.errors import GatewayError
from privguard.gateway.inputs import fingerprints, parse_inputs
from privguard.oracle import Access

EXAMPLE = Path(__file__).parents[2] / "examples" / "gateway.toml"


def test_the_example_config_parses():
    cfg = GatewayConfig.from_toml(EXAMPLE)
    assert set(cfg.tiers) == {"label", "topk", "probs", "internal"}
    assert cfg.tiers["topk"].exposure == Access.TOPK and cfg.tiers["topk"].k == 3
    assert cfg.tiers["probs"].retain_inputs_days == 7
    assert cfg.tiers["internal"].exposure == Access.LOGITS


@pytest.mark.parametrize(
    "tier,match",
    [
        ({"access": "whitebox"}, "never returns gradients"),
        ({"access": "gold"}, "unknown access level"),
        ({"policy": "topk:zero"}, "cannot parse output policy"),
        ({"rate_limits": "lots"}, "cannot parse rate_limits"),
        ({"max_batch": 0}, "max_batch"),
        ({"daily_budget": -5}, "daily_budget"),
        ({"retain_inputs_days": -1}, "retain_inputs_days"),
        ({"colour": "red"}, "unknown setting"),
    ],
)
def test_bad_tiers_are_refused_with_a_message(tier, match):
    with pytest.raises(ConfigError, match=match):
        GatewayConfig.from_dict({"tiers": {"t": tier}})


def test_bad_files_and_sections_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no gateway config"):
        GatewayConfig.from_toml(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[tiers\n")
    with pytest.raises(ConfigError, match="not a valid TOML"):
        GatewayConfig.from_toml(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="at least one tier"):
        GatewayConfig.from_dict({"server": {}})
    with pytest.raises(ConfigError, match="unknown \\[server\\]"):
        GatewayConfig.from_dict({"server": {"port": 1}, "tiers": {"a": {}}})


def test_policy_caps_the_tier_access():
    cfg = GatewayConfig.from_dict(
        {"tiers": {"a": {"access": "logits", "policy": "topk:2"}, "b": {"access": "logits"}}}
    )
    assert cfg.tiers["a"].exposure == Access.TOPK and cfg.tiers["a"].k == 2
    assert cfg.tiers["b"].exposure == Access.LOGITS


def _parse(body: bytes, max_batch: int = 4):
    return parse_inputs(body, (1, 2, 2), bounds=(0.0, 1.0), max_batch=max_batch)


def test_flat_and_nested_records_parse_to_the_same_array():
    flat = _parse(b'{"inputs": [[0, 0.25, 0.5, 1], [1, 1, 1, 1]]}')
    nested = _parse(b'{"inputs": [[[[0, 0.25], [0.5, 1]]], [[[1, 1], [1, 1]]]]}')
    assert flat.shape == (2, 1, 2, 2) and flat.dtype == np.float32
    np.testing.assert_array_equal(flat, nested)


@pytest.mark.parametrize(
    "body,code",
    [
        (b'{"inputs": [[0, 0, 0]]}', "wrong_shape"),
        (b'{"inputs": [[[0, 0, 0, 0]]]}', "wrong_shape"),
        (b'{"inputs": [[0, 0, 0, "0"]]}', "invalid_record"),
        (b'{"inputs": [[0, 0, 0, false]]}', "invalid_record"),
        (b'{"inputs": [[0, 0, 0], [0, 0, 0, 0]]}', "invalid_record"),
        (b'{"inputs": [[0, 0, 0, 2]]}', "out_of_bounds"),
        (b'{"inputs": [[0, 0, 0, Infinity]]}', "invalid_json"),
        (b'{"inputs": [[0, 0, 0, 0]], "debug": true}', "unknown_field"),
        (b'{"inputs": [[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0]]}', "batch_too_large"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
def test_malformed_bodies_raise_4xx(body, code):
    with pytest.raises(GatewayError) as e:
        _parse(body)
    assert e.value.code == code and 400 <= e.value.status < 500


@pytest.mark.parametrize(
    "body,code",
    [
        (b'{"inputs": [[0, 0, 0, NaN]]}', "invalid_json"),  # orjson refuses: the stdlib decides
        (b'{"inputs": [[0, 0, 0, 1e400]]}', "non_finite"),
        (b'{"inputs": [[0, 0, 0, 100000000000000000000000000000]]}', "out_of_bounds"),
        (b'{"inputs": [[0, 0, 0, null]]}', "invalid_record"),
        (b'{"inputs": [[0, 0, -1, 18446744073709551615]]}', "out_of_bounds"),  # int64 + uint64
        (b'{"inputs": [[0, 0, 0, "\\ud800"]]}', "invalid_record"),
        (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_json"),
    ],
)
def test_bodies_orjson_refuses_are_judged_as_the_standard_library_judges_them(body, code):
    with pytest.raises(GatewayError) as e:
        _parse(body)
    assert e.value.code == code and 400 <= e.value.status < 500


def test_orjson_and_the_standard_library_read_the_same_records():
    """Numbers as clients write them (17 digits, exponents, integers, negative zero as a
    float): the array from orjson equals the one from the standard library's parse."""
    import json

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(64, 4))
    x[0] = [0, 1, 0.5, 1e-7]
    x[1] = [-0.0, 0.25, 3e-5, 1]
    rows = [[float(v) for v in r] for r in x]
    rows[2] = [0, 1, 1, 0]  # integers
    body = json.dumps({"inputs": rows}).encode()
    got = _parse(body, max_batch=64)
    expected = np.asarray(json.loads(body, parse_int=float)["inputs"], dtype=np.float64)
    expected = expected.astype(np.float32).reshape(got.shape)
    assert got.tobytes() == expected.tobytes()  # bit for bit, the sign of zero included


def test_fingerprints_are_keyed_hmacs():
    x = np.array([[0.5, 0.25]], dtype=np.float32)
    fp = fingerprints(b"k" * 32, x)[0]
    assert fp == hmac.new(b"k" * 32, x[0].astype("<f4").tobytes(), hashlib.sha256).hexdigest()
    assert fingerprints(b"j" * 32, x)[0] != fp
    assert fingerprints(b"k" * 32, x.astype(np.float64))[0] == fp
