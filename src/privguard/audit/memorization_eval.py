"""Memorization audits of text models: the memorization family's metrics and the text corpus.

The attacks (``exposure``, ``extract``) see a :class:`TextOracle` and :class:`TextKnowledge`
(the canary formats, public text); the evaluators here alone hold the truth — which canaries
were inserted and how often, and the training corpus — and turn the attacks' guesses into the
metrics of docs/metrics.md (the engine, :mod:`privguard.audit.engine`, runs the attacks; the
family record is :mod:`privguard.audit.families.memorization`):

- exposure (Carlini et al. 2019): ``exposure_bits_max`` (log2 |R|), the exposure of every
  inserted canary grouped by repetition count, ``exposure_bits_top_repeats`` (mean over the
  canaries inserted most often) and the reference distribution of random non-inserted
  candidates (``exposure_bits_reference_mean``, about 1/ln 2 ≈ 1.44 bits when nothing leaks);
- extraction (Carlini et al. 2021): ``precision_at_100``, the share of the attack's submitted
  samples that reproduce training text verbatim, and the same per ranking metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from privguard.attacks.memorization import (
    ExposureGuesses,
    ExtractionGuesses,
)
from privguard.data.corpus import Canary, Corpus, load_corpus
from privguard.errors import DataError
from privguard.models.text import TextTarget

N_REFERENCE = 1000  # random non-inserted candidates behind the reference distribution
N_REFERENCE_EXTRAPOLATED = 300  # each costs a query when exposure is extrapolated
MIN_MATCH = 40  # characters of verbatim training text that make a sample "memorized"
MIN_LINE = 12  # or a whole training line at least this long
PUBLIC_RECORDS = 200  # other people's records in the attacker's public text


def corpus_for(target: TextTarget, data: str | None) -> Corpus | None:
    """The training corpus of a text audit: ``data`` checked against the recorded one, or the
    recorded one, or ``data`` for a plain Hugging Face model (``None``: none known)."""
    if data is None:
        return target.corpus
    given = load_corpus(data)
    if target.corpus is not None:
        if given.content_hash() != target.corpus.content_hash():
            raise DataError(
                f"the corpus {data} differs from the one this model was trained on (kept in "
                f"{target.path}/corpus.txt); leave out --data to use that one"
            )
        return target.corpus
    return given


def describe_corpus(target: TextTarget, corpus: Corpus | None) -> dict[str, Any]:
    """report.json's ``data`` for a text audit."""
    if corpus is None:
        return {"name": None, "kind": "text", "note": "no training corpus given"}
    d: dict[str, Any] = {
        "name": corpus.name,
        "kind": "text",
        "n_lines": len(corpus.lines),
        "n_chars": corpus.n_chars,
        "sha256": corpus.content_hash(),
    }
    if target.canaries:
        d["canaries"] = {
            "formats": [f.template for f in target.formats],
            "inserted": len(target.canaries),
            "repeats": sorted({c.repeats for c in target.canaries}),
        }
    return d


# -- exposure ------------------------------------------------------------------------------------


def exposure_metrics(
    guesses: ExposureGuesses, canaries: Sequence[Canary], *, seed: int = 0
) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """Exposure of every inserted canary and of random non-inserted reference candidates."""
    rows: list[list[Any]] = []
    per_canary: list[tuple[int, float]] = []
    reference: list[np.ndarray] = []
    bits_max = 0.0
    for j, ranking in enumerate(guesses.rankings):
        fmt = ranking.format
        bits_max = max(bits_max, fmt.bits)
        mine = [c for c in canaries if c.format == fmt.template]
        exact = ranking.mode == "exact"
        if exact:
            assert ranking.log_perplexity is not None
            px = ranking.log_perplexity[[c.index for c in mine]]
        else:
            assert ranking.score is not None
            px = ranking.score([c.text for c in mine])
        exp = ranking.exposure_of_px(px)
        for c, e, p in zip(mine, exp, px, strict=True):
            rank = 2.0 ** (fmt.bits - e)
            rows.append([c.text, c.repeats, round(float(p), 3), _rank_text(rank, exact), float(e)])
            per_canary.append((c.repeats, float(e)))
        rng = np.random.default_rng([seed, j, 7])
        n_ref = min(N_REFERENCE if exact else N_REFERENCE_EXTRAPOLATED, fmt.space_size - len(mine))
        ref_idx = fmt.sample(n_ref, rng, exclude=[c.index for c in mine])
        if exact:
            ref_px = ranking.log_perplexity[ref_idx.astype(np.int64)]
        else:
            ref_px = ranking.score(fmt.render_many(ref_idx))  # type: ignore[misc]
        reference.append(ranking.exposure_of_px(ref_px))
    ref = np.concatenate(reference) if reference else np.zeros(0)
    repeats = sorted({r for r, _ in per_canary})
    by_repeat = {r: float(np.mean([e for rr, e in per_canary if rr == r])) for r in repeats}
    m: dict[str, float] = {
        "exposure_bits_max": round(bits_max, 4),
        "exposure_bits_top_repeats": round(by_repeat[repeats[-1]], 4) if repeats else 0.0,
        "exposure_bits_reference_mean": round(float(ref.mean()), 4) if len(ref) else 0.0,
        "exposure_bits_reference_p95": round(float(np.percentile(ref, 95)), 4) if len(ref) else 0.0,
        "exposure_top_repeats_fraction": (
            round(by_repeat[repeats[-1]] / bits_max, 4) if repeats and bits_max else 0.0
        ),
        "top_repeats": float(repeats[-1]) if repeats else 0.0,
        "n_canaries": len(per_canary),
        "n_reference": len(ref),
    }
    for r in repeats:
        m[f"exposure_bits_repeats_{r}"] = round(by_repeat[r], 4)
    rows.sort(key=lambda row: (-row[1], -row[4]))
    for row in rows:
        row[4] = round(row[4], 3)
    hist, edges = np.histogram(ref, bins=min(30, max(5, len(ref) // 30)), range=(0, bits_max))
    curves: dict[str, Any] = {
        "exposure_vs_repeats": {
            "x": repeats,
            "y": [by_repeat[r] for r in repeats],
            "xlabel": "times the canary was inserted",
            "ylabel": f"mean exposure (bits; max {bits_max:.1f})",
            "logx": True,
        },
        "reference_distribution": {
            "x": ((edges[:-1] + edges[1:]) / 2).tolist(),
            "y": (hist / max(len(ref), 1)).tolist(),
            "xlabel": "exposure of non-inserted candidates (bits)",
            "ylabel": "share of reference candidates",
        },
        "canary_table": {
            "title": "Exposure of every inserted canary",
            "columns": ["canary", "times inserted", "log-perplexity (bits)", "rank", "exposure"],
            "rows": rows,
        },
    }
    notes = [
        f"{len(ref)} random non-inserted candidates give the reference: mean exposure "
        f"{m['exposure_bits_reference_mean']:.2f} bits (1/ln 2 ≈ 1.44 when the model knows "
        f"nothing); canaries inserted {repeats[-1] if repeats else 0} times reach "
        f"{m['exposure_bits_top_repeats']:.2f} of {bits_max:.2f} bits"
    ]
    return m, curves, notes


def _rank_text(rank: float, exact: bool) -> str:
    r = max(1.0, rank)
    return f"{int(round(r)):,}" if exact else f"≈{r:.3g}"


# -- extraction ----------------------------------------------------------------------------------


class _TrainingIndex:
    """Verbatim look-up of training text: every ``MIN_MATCH``-character window of every line,
    and every whole line of at least ``MIN_LINE`` characters."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = {line for line in lines if len(line) >= MIN_LINE}
        self.windows = {
            line[i : i + MIN_MATCH] for line in lines for i in range(len(line) - MIN_MATCH + 1)
        }

    def memorized(self, sample: str) -> bool:
        s = sample.strip()
        if s in self.lines:
            return True
        return any(s[i : i + MIN_MATCH] in self.windows for i in range(len(s) - MIN_MATCH + 1))


def extraction_metrics(
    guesses: ExtractionGuesses, corpus_lines: Sequence[str], canaries: Sequence[Canary]
) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """Precision at k of the submitted samples (and per ranking) against the training corpus."""
    index = _TrainingIndex(corpus_lines)
    hits = np.array([index.memorized(s) for s in guesses.samples], dtype=bool)
    k = guesses.k
    m: dict[str, float] = {
        "precision_at_100": _precision(hits, guesses.submitted),
        "n_samples": len(guesses.samples),
        "n_submitted": len(guesses.submitted),
        "memorized_share_all": round(float(hits.mean()), 4) if len(hits) else 0.0,
    }
    for name, order in guesses.rankings.items():
        m[f"precision_at_100_{name}"] = _precision(hits, list(order[:k]))
    extracted = {c.text for c in canaries if any(c.text in s for s in guesses.samples)}
    m["canaries_extracted"] = len(extracted)
    if canaries:
        top = max(c.repeats for c in canaries)
        m["canaries_extracted_top_repeats"] = sum(
            c.text in extracted for c in canaries if c.repeats == top
        )
    ks = [i for i in (1, 5, 10, 20, 50, 100, 200, 500) if i <= len(guesses.submitted)]
    sub = hits[guesses.submitted] if guesses.submitted else np.zeros(0, bool)
    curves: dict[str, Any] = {
        "precision_at_k": {
            "x": ks,
            "y": [float(sub[:i].mean()) for i in ks],
            "xlabel": "k (submitted samples, most suspicious first)",
            "ylabel": "precision (memorized share)",
            "logx": True,
        },
        "top_samples": {
            "title": "The attack's ten most suspicious samples",
            "columns": ["#", "sample", "memorized"],
            "rows": [
                [i + 1, guesses.samples[j][:120], "yes" if hits[j] else "no"]
                for i, j in enumerate(guesses.submitted[:10])
            ],
        },
    }
    notes = [
        f"a sample counts as memorized when it reproduces a whole training line (≥ {MIN_LINE} "
        f"characters) or any {MIN_MATCH} consecutive characters of one; "
        f"{int(hits.sum())} of {len(hits)} samples do (the baseline for precision)"
    ]
    if len(guesses.submitted) < k:
        notes.append(
            f"only {len(guesses.submitted)} distinct samples: precision_at_100 is over those"
        )
    if extracted:
        notes.append(f"inserted canaries generated verbatim: {', '.join(sorted(extracted))}")
    return m, curves, notes


def _precision(hits: np.ndarray, chosen: Sequence[int]) -> float:
    return round(float(hits[list(chosen)].mean()), 4) if len(chosen) else 0.0


MOST_EXTRACTED = 10  # documents listed in the report's summary


def discoverable_metrics(guesses: Any, is_member: np.ndarray) -> tuple[dict, dict, list[str]]:
    """Discoverable extraction (Carlini et al. 2023), members vs non-members: the share of
    documents whose suffix greedy decoding reproduced exactly, and the mean longest run of
    matching tokens, over the documents long enough to test."""
    member = np.asarray(is_member, dtype=bool)
    ok = ~np.isnan(guesses.exact)
    m: dict[str, float] = {}
    for name, sel in (("members", member & ok), ("nonmembers", ~member & ok)):
        m[f"exact_match_rate_{name}"] = float(guesses.exact[sel].mean()) if sel.any() else 0.0
        m[f"longest_run_mean_{name}"] = float(guesses.longest_run[sel].mean()) if sel.any() else 0.0
        m[f"documents_tested_{name}"] = int(sel.sum())
    m["exact_match_excess"] = m["exact_match_rate_members"] - m["exact_match_rate_nonmembers"]
    m["prefix_tokens"] = guesses.prefix_tokens
    m["suffix_tokens"] = guesses.suffix_tokens
    notes = []
    if not ok.any():
        notes.append("no document is long enough for prefix + suffix: lower the setting")
    return m, {}, notes


def most_extracted(guesses: Any, truth: Any, top: int = MOST_EXTRACTED) -> list[dict[str, Any]]:
    """The member documents with the longest reproduced runs (their text unless redacted)."""
    member = np.asarray(truth.is_member, dtype=bool)
    run = np.where(np.isnan(guesses.longest_run), -1.0, guesses.longest_run)
    idx = [i for i in np.argsort(-run, kind="stable") if member[i] and run[i] > 0][:top]
    out = []
    for i in idx:
        position = getattr(truth, "position", None)
        rec: dict[str, Any] = {
            "index": int(i),
            "member_document": int(position[i]) if position is not None else None,
            "exact": bool(guesses.exact[i] == 1.0),
            "longest_run": int(run[i]),
        }
        if not guesses.redact:
            rec["generated_suffix"] = guesses.suffixes[i]
        out.append(rec)
    return out
