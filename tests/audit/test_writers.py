"""Report files (privguard.audit.report): report.json, report.html, model-card.md, atomic write."""

from __future__ import annotations

import base64
import json
import math
import os
import re
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from privguard.audit import plots
from privguard.audit.report import AttackResult, Report, summarise, write
from privguard.audit.report.card import TODOS, render_model_card
from privguard.audit.report.html import render_html
from privguard.audit.report.serialize import render_json
from privguard.audit.report.write import write_report
from privguard.errors import ConfigError

N_MEMBERS, N_NONMEMBERS = 719, 539


def binormal_roc(d: float, n: int = N_NONMEMBERS) -> dict[str, list[float]]:
    """An ROC at the resolution of ``n`` non-members: tpr = Phi(Phi^-1(fpr) + d)."""
    z = NormalDist()
    fpr = [k / n for k in range(n + 1)]
    tpr = [0.0] + [z.cdf(z.inv_cdf(f) + d) if f < 1 else 1.0 for f in fpr[1:]]
    return {"fpr": fpr, "tpr": tpr}


def membership(name: str, auc: float, tpr1: float, risk: str, notes: list[str]) -> AttackResult:
    return AttackResult(
        name=name,
        family="membership",
        access="probs",
        queries=N_MEMBERS + N_NONMEMBERS,
        seconds=3.25,
        metrics={
            "auc": auc,
            "advantage": 0.32,
            "tpr_at_fpr_0.01": tpr1,
            "tpr_at_fpr_0.001": 0.0,
            "n_members": N_MEMBERS,
            "n_nonmembers": N_NONMEMBERS,
            "fpr_0.01_false_positives_allowed": 5,
            "fpr_0.001_false_positives_allowed": 0,
            "attacker_threshold_tpr": 0.6,
            "attacker_threshold_fpr": 0.3,
            "attacker_accuracy": 0.66,
        },
        risk=risk,
        paper="Carlini et al., S&P 2022",
        description=f"{name}: is this record in the training set?",
        notes=notes,
        curves={"roc": binormal_roc(2 * (auc - 0.5) * 2.5)},
    )


def sample_report(*, extra_attacks: list[AttackResult] | None = None) -> Report:
    attacks = [
        membership(
            "threshold",
            0.71,
            0.05,
            "medium",
            [
                "TPR at 0.1% FPR rests on 0 allowed false positives among 539 non-members: "
                "not resolved"
            ],
        ),
        membership("lira", 0.76, 0.09, "high", []),
        AttackResult(
            name="mi_face",
            family="inversion",
            access="whitebox",
            queries=50_000,
            seconds=41.5,
            metrics={"attack_accuracy": 0.8, "mse_to_class_mean": 0.0213},
            risk="medium",
            paper="Fredrikson, Jha, Ristenpart, CCS 2015",
            description="Reconstructs a representative input of each class.",
            curves={
                "reconstructions": {
                    "images": [
                        [[float((k + r * c) % 16) for c in range(8)] for r in range(8)]
                        for k in range(4)
                    ],
                    "labels": ["0", "1", "2", "3"],
                },
                "loss": {"x": [1, 2, 3, 4], "y": [0.9, 0.5, 0.3, 0.25], "xlabel": "iteration"},
                "mystery": [1, 2, 3],
            },
        ),
    ]
    attacks += extra_attacks or []
    return Report(
        privguard_version="0.1.0",
        target={
            "path": "runs/digits-mlp",
            "kind": "torch",
            "architecture": {
                "type": "mlp",
                "hidden": [256, 256],
                "input_shape": [1, 8, 8],
                "n_classes": 10,
            },
            "training": {
                "epochs": 100,
                "lr": 0.001,
                "batch_size": 64,
                "dropout": 0.0,
                "weight_decay": 0.0,
                "label_smoothing": 0.0,
                "early_stopping": False,
                "seed": 0,
            },
            "train_accuracy": 1.0,
            "test_accuracy": 0.95,
            "n_parameters": 83466,
            "sha256": "ab" * 32,
        },
        data={
            "name": "digits",
            "kind": "image",
            "n": 1797,
            "input_shape": [1, 8, 8],
            "n_classes": 10,
            "classes": [str(c) for c in range(10)],
            "sha256": "cd" * 32,
            "source": "scikit-learn load_digits (UCI optdigits)",
            "licence": "CC BY 4.0",
            "split": {"seed": 0, "members": 719, "nonmembers": 539, "aux": 539, "validation": 0},
            "duplicates": {"cross_split_twins": 0, "note": "exact duplicates across roles"},
        },
        attacks=attacks,
        summary=summarise(attacks),
        plan={
            "attacks": [a.name for a in attacks],
            "access": "probs",
            "seed": 0,
            "fail_on": None,
            "command": "privguard audit runs/digits-mlp --attacks membership,mi_face --out r",
            "created": "2026-11-28T17:00:00Z",
        },
    )


@pytest.fixture(scope="module")
def report() -> Report:
    return sample_report()


@pytest.fixture(scope="module")
def html(report: Report) -> str:
    return render_html(report)


def data_uris(html: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    ]


# --- JSON ------------------------------------------------------------------------------------


def test_json_round_trips_through_report_from_dict(report: Report) -> None:
    assert Report.from_dict(json.loads(render_json(report))) == report


def test_json_has_the_contract_keys(report: Report) -> None:
    d = json.loads(render_json(report))
    assert {"privguard_version", "target", "data", "attacks", "summary"} <= d.keys()
    for a in d["attacks"]:
        assert {"name", "family", "access", "queries", "seconds", "metrics", "risk"} <= a.keys()
        assert a["risk"] in ("low", "medium", "high")
    assert d["summary"]["overall_risk"] == "high"


def test_json_writes_non_finite_numbers_as_null() -> None:
    bad = AttackResult(
        "odd",
        "membership",
        "probs",
        1,
        float("inf"),
        {"auc": float("nan"), "advantage": float("-inf"), "ok": 0.5},
        "low",
        curves={"roc": {"fpr": [0.0, float("nan"), 1.0], "tpr": [0.0, 0.5, 1.0]}},
    )
    text = render_json(sample_report(extra_attacks=[bad]))
    d = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    odd = d["attacks"][-1]
    assert odd["metrics"] == {"auc": None, "advantage": None, "ok": 0.5}
    assert odd["seconds"] is None
    assert odd["curves"]["roc"]["fpr"] == [0.0, None, 1.0]


def test_json_turns_numpy_values_into_plain_numbers() -> None:
    a = AttackResult(
        "np",
        "membership",
        "probs",
        np.int64(10),
        np.float32(1.5),
        {"auc": np.float64(0.6), "n_nonmembers": np.int64(539), "nan": np.float32("nan")},
        "low",
        curves={"roc": {"fpr": np.linspace(0, 1, 5), "tpr": np.linspace(0, 1, 5) ** 0.5}},
    )
    d = json.loads(render_json(sample_report(extra_attacks=[a])))["attacks"][-1]
    assert d["queries"] == 10 and d["seconds"] == 1.5
    assert d["metrics"] == {"auc": 0.6, "n_nonmembers": 539, "nan": None}
    assert d["curves"]["roc"]["fpr"] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_json_names_where_an_unserialisable_value_sits() -> None:
    a = AttackResult("bad", "membership", "probs", 1, 1.0, {"auc": object()}, "low")
    with pytest.raises(TypeError, match=r"report\.attacks\[3\]\.metrics\.auc"):
        render_json(sample_report(extra_attacks=[a]))


# --- HTML ------------------------------------------------------------------------------------


def test_html_is_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert 'src="http' not in html and "src='http" not in html
    assert "<link" not in html and "<script" not in html and "@import" not in html
    assert "url(" not in html
    assert "data:image/png;base64," in html


def test_html_inlines_a_decodable_png_per_plot(html: str) -> None:
    pngs = data_uris(html)
    # overlay + 2 membership ROCs + inversion images + inversion loss curve
    assert len(pngs) == 5
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)


def test_html_shows_summary_then_every_attack(report: Report, html: str) -> None:
    summary, target, attacks = (html.index(f'id="{s}"') for s in ("summary", "target", "attacks"))
    assert summary < target < attacks
    assert 'class="overall risk-high"' in html
    for i, a in enumerate(report.attacks, start=1):
        assert f'href="#attack-{i}">{a.name}</a>' in html
        assert f'<article id="attack-{i}">' in html
    assert "AUC</abbr> <b>0.710</b>" in html  # key metric at 3 decimals (glossary tooltip)
    assert "83,466" in html and "Carlini et al., S&amp;P 2022" in html
    assert "ROC curves of every membership attack" in html
    assert "not resolved" in html


def test_html_ignores_unknown_curve_kinds_and_says_so(html: str) -> None:
    assert "mystery: no drawing for this kind of curve" in html


def test_html_escapes_attack_text() -> None:
    evil = AttackResult(
        "<b>evil</b>",
        "membership",
        "probs",
        1,
        1.0,
        {"auc": 0.5},
        "low",
        notes=["<script>alert(1)</script>"],
    )
    html = render_html(sample_report(extra_attacks=[evil]))
    assert "<script>" not in html and "<b>evil</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;evil&lt;/b&gt;" in html


def test_html_shows_non_finite_numbers_as_a_dash() -> None:
    odd = AttackResult(
        "odd",
        "membership",
        "probs",
        1,
        1.0,
        {"auc": float("nan")},
        "low",
        curves={"roc": {"fpr": [0.0, float("nan"), 0.5, 1.0], "tpr": [0.0, 0.2, 0.7, 1.0]}},
    )
    html = render_html(sample_report(extra_attacks=[odd]))
    assert "AUC</abbr> <b>—</b>" in html
    assert '<td><code>auc</code></td><td class="num">—</td>' in html
    assert len(data_uris(html)) == 6  # one more ROC, drawn from its finite points


def test_html_renders_a_report_without_attacks() -> None:
    r = Report("0.1.0", {"path": "m"}, {"name": "digits"}, [], summarise([]))
    html = render_html(r)
    assert "No attacks were run." in html and "data:image/png" not in html


# --- plots -----------------------------------------------------------------------------------


def test_roc_plot_is_deterministic_png() -> None:
    curves = {"a": ([0.0, 0.01, 0.5, 1.0], [0.0, 0.1, 0.8, 1.0]), "b": ([0, 1], [0, 1])}
    one = plots.roc_plot(curves, "t", aucs={"a": 0.8, "b": float("nan")}, resolution=1 / 539)
    assert one.startswith(b"\x89PNG") and one == plots.roc_plot(
        curves, "t", aucs={"a": 0.8, "b": float("nan")}, resolution=1 / 539
    )


def test_roc_plot_survives_empty_and_non_finite_curves() -> None:
    png = plots.roc_plot({"x": ([], []), "y": ([math.nan, 0.0, 1.0], [0.5, math.inf, 1.0])}, "t")
    assert png.startswith(b"\x89PNG")


def test_fpr_floor_stops_at_the_resolution_decade() -> None:
    assert plots.fpr_floor(None) == 1e-3
    assert plots.fpr_floor(539) == 1e-3
    assert plots.fpr_floor(50_000) == 1e-5


# --- model card ------------------------------------------------------------------------------

SECTIONS = [
    "Model details",
    "Intended use",
    "Data collection",
    "Training",
    "Privacy evaluation",
    "Deployment",
    "Monitoring",
    "Caveats",
]


def test_model_card_has_every_section_in_order(report: Report) -> None:
    card = render_model_card(report)
    positions = [card.index(f"\n## {s}\n") for s in SECTIONS]
    assert positions == sorted(positions)
    assert card.index("## Checklist") > positions[-1]


def test_model_card_fills_what_privguard_knows(report: Report) -> None:
    card = render_model_card(report)
    for known in ("digits", "CC BY 4.0", "83,466", "Learning rate", "| 100 |", "**HIGH**"):
        assert known in card
    assert "| 2 | lira | membership | probs | AUC 0.760, TPR@1%FPR 0.090 | **HIGH** |" in card
    assert "generalisation gap of 0.050" in card


def test_model_card_marks_and_lists_every_gap(report: Report) -> None:
    card = render_model_card(report)
    body, checklist = card.split("## Checklist")
    for section, what in TODOS.values():
        assert f"**[TO FILL: {what}]**" in body
        assert f"- [ ] {section}: {what}" in checklist
    assert "**[TO FILL: who collected the data, when, and with what consent]**" in body
    assert body.count("TO FILL") == len(TODOS)  # grep TO FILL finds exactly the gaps


def test_model_card_escapes_markdown_in_attack_text() -> None:
    odd = AttackResult("a|b", "membership", "probs", 1, 1.0, {"auc": 0.5}, "low", notes=["<x> | y"])
    card = render_model_card(sample_report(extra_attacks=[odd]))
    assert "a\\|b" in card and "\\<x\\> \\| y" in card and "<x>" not in card


# --- writing ---------------------------------------------------------------------------------


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_write_report_writes_the_three_files(report: Report, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "report"
    paths = write_report(report, out)
    assert paths == {
        "json": out / "report.json",
        "html": out / "report.html",
        "model_card": out / "model-card.md",
    }
    assert sorted(p.name for p in out.iterdir()) == ["model-card.md", "report.html", "report.json"]
    assert Report.from_dict(json.loads(paths["json"].read_text())) == report
    assert paths["model_card"].read_text() == render_model_card(report)
    assert sorted(p.name for p in (tmp_path / "nested").iterdir()) == ["report"]  # no temp dirs


def test_a_rendering_error_writes_nothing_and_keeps_the_previous_report(
    report: Report, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    write_report(report, out)
    (out / "model.safetensors").write_bytes(b"weights")
    before = snapshot(out)
    broken = sample_report(
        extra_attacks=[AttackResult("x", "membership", "probs", 1, 1.0, {"auc": object()}, "low")]
    )
    with pytest.raises(TypeError):
        write_report(broken, out)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_late_rendering_error_writes_nothing_either(
    report: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    write_report(report, out)
    before = snapshot(out)

    def broken_card(report: Report) -> str:
        raise RuntimeError("template bug")

    monkeypatch.setattr(write, "render_model_card", broken_card)
    with pytest.raises(RuntimeError, match="template bug"):
        write_report(sample_report(extra_attacks=[]), out)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_rendering_error_does_not_create_the_directory(tmp_path: Path) -> None:
    broken = sample_report(
        extra_attacks=[AttackResult("x", "membership", "probs", 1, 1.0, {"auc": {1, 2}}, "low")]
    )
    with pytest.raises(TypeError):
        write_report(broken, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_move_leaves_whole_files_and_no_temp_dir(
    report: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    write_report(sample_report(extra_attacks=[]), out)
    old = snapshot(out)
    real_replace = os.replace
    calls: list[str] = []

    def flaky_replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        calls.append(str(dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    changed = sample_report(extra_attacks=[membership("extra", 0.9, 0.5, "high", [])])
    monkeypatch.setattr(write.os, "replace", flaky_replace)
    with pytest.raises(ConfigError, match="No space left on device"):
        write_report(changed, out)
    new = {
        "report.json": render_json(changed).encode(),
        "model-card.md": render_model_card(changed).encode(),
    }
    for name, content in snapshot(out).items():
        assert content in (old[name], new.get(name)), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(old)


def test_out_dir_that_is_a_file_is_a_config_error(report: Report, tmp_path: Path) -> None:
    f = tmp_path / "report"
    f.write_text("not a directory")
    with pytest.raises(ConfigError, match="is a file"):
        write_report(report, f)
    with pytest.raises(ConfigError, match="is a file"):
        write_report(report, f / "sub")
    assert f.read_text() == "not a directory"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_dir_is_a_config_error(report: Report, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            write_report(report, locked)
    finally:
        locked.chmod(0o700)


def test_out_dir_without_write_permission_is_a_config_error(
    report: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="not writable"):
        write_report(report, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_the_same_report_renders_the_same_html(report: Report, html: str) -> None:
    assert render_html(report) == html
