"""Canary exposure.

Carlini, Liu, Erlingsson, Kos and Song, "The Secret Sharer: Evaluating and Testing Unintended
Memorization in Neural Networks", USENIX Security 2019.

A canary is a random secret of a known format (``"my pin is {digits:6}"``) inserted into the
training data. The model's log-perplexity of a candidate s is Px(s) = −log2 Pr(s). Ranking all
candidates of the format's space R by Px, the exposure of a canary is

    exposure(s) = log2 |R| − log2 rank(s),

so a canary the model ranks first has the maximum exposure log2 |R| (it is extractable by a
search over the space), while a candidate the model never saw has a uniformly random rank and
an expected exposure of about 1 / ln 2 ≈ 1.44 bits.

This attack ranks the whole space without knowing which canaries were inserted:

- **exact** (the paper's Section 5.1): every candidate's Px. For a character-level model the
  space is enumerated as a tree — each slot's options are scored from every prefix's
  next-character distribution, so |R| candidates cost about |R| / (options of the last slot)
  queries; a token-level model scores each candidate as a whole (up to 20,000 of them).
- **extrapolated** (Section 5.2, opt-in): Px of a random sample of candidates is fitted with a
  skew-normal distribution ρ (``scipy.stats.skewnorm``), and exposure(s) ≈ −log2 P_{t∼ρ}(t ≤ Px(s)).

The evaluator, which alone knows the inserted canaries, reads their ranks (or scores them
through the same oracle for the fit) and those of random non-inserted reference candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from privguard.attacks.base import Attack, Progress, Setting
from privguard.attacks.memorization.knowledge import TextKnowledge
from privguard.attacks.memorization.oracle import LN2, TextOracle
from privguard.attacks.registry import register
from privguard.data.corpus import CanaryFormat
from privguard.errors import ConfigError
from privguard.oracle import Access

EXACT_LIMIT_CHAR = 2_000_000
EXACT_LIMIT_TOKEN = 20_000


@dataclass
class FormatRanking:
    """What the attack learned about one format's candidate space.

    ``log_perplexity`` (exact mode): Px in bits of every candidate, indexed like
    :meth:`CanaryFormat.render`. ``fit`` (extrapolated mode): skew-normal ``(a, loc, scale)`` of
    Px over ``n_fit`` random candidates. ``score``: Px of given candidate texts, through the
    oracle (the evaluator uses it for canaries in extrapolated mode).
    """

    format: CanaryFormat
    mode: str
    log_perplexity: np.ndarray | None = None
    fit: tuple[float, float, float] | None = None
    n_fit: int = 0
    score: Callable[[list[str]], np.ndarray] | None = field(default=None, repr=False)

    def exposure_of_px(self, px: np.ndarray) -> np.ndarray:
        """Exposure (bits) of candidates with log-perplexities ``px``."""
        px = np.asarray(px, dtype=np.float64)
        if self.mode == "exact":
            assert self.log_perplexity is not None
            ranked = np.sort(self.log_perplexity)
            rank = np.searchsorted(ranked, px, side="left") + 1  # 1 = most likely candidate
            return self.format.bits - np.log2(rank)
        from scipy.stats import skewnorm

        assert self.fit is not None
        a, loc, scale = self.fit
        log_cdf = skewnorm.logcdf(px, a, loc=loc, scale=scale)
        # A CDF below 1/|R| would mean a rank under 1: cap at the maximum exposure.
        return np.minimum(-log_cdf / LN2, self.format.bits)


@dataclass
class ExposureGuesses:
    rankings: list[FormatRanking]
    notes: list[str] = field(default_factory=list)


@register
class Exposure(Attack[TextOracle, TextKnowledge]):
    """Rank every candidate of each canary format by the model's log-perplexity."""

    name: ClassVar[str] = "exposure"
    family: ClassVar[str] = "memorization"
    needs: ClassVar[Access] = Access.PROBS
    kinds: ClassVar[tuple[str, ...]] = ("text",)
    paper: ClassVar[str] = (
        "Carlini, Liu, Erlingsson, Kos, Song, The Secret Sharer: Evaluating and Testing "
        "Unintended Memorization in Neural Networks, USENIX Security 2019"
    )
    description: ClassVar[str] = (
        "Ranks every candidate secret of the canary format by the model's log-perplexity; a "
        "canary the model ranks near the top is exposed (exposure = log2|R| − log2 rank)."
    )

    settings = (
        Setting("n_fit", int, 4000, "candidates the extrapolation's fit scores", 50),
        Setting("extrapolate", bool, None, "allow extrapolation for large candidate spaces"),
    )

    def __init__(
        self,
        *,
        extrapolate: bool | None = None,
        n_fit: int = 4000,
        exact_limit: int | None = None,
        batch: int = 4096,
    ) -> None:
        self.extrapolate = extrapolate
        self.n_fit = n_fit
        self.exact_limit = exact_limit
        self.batch = batch
        self.check_settings([(n_fit >= 50, "n_fit must be at least 50 candidates")])

    def run(
        self, oracle: TextOracle, knowledge: TextKnowledge, progress: Progress | None = None
    ) -> ExposureGuesses:
        self.check_access(oracle)
        if not knowledge.formats:
            raise ConfigError(
                "exposure needs canary formats: train the model with `privguard train --canary "
                "FORMAT` (or fine-tune a Hugging Face model that way) so the audit knows them"
            )
        extrapolate = knowledge.extrapolate if self.extrapolate is None else self.extrapolate
        char = oracle.granularity == "char"
        limit = self.exact_limit or (EXACT_LIMIT_CHAR if char else EXACT_LIMIT_TOKEN)
        rankings, notes = [], []
        for i, fmt in enumerate(knowledge.formats):
            if progress is not None:
                progress("exposure", i, len(knowledge.formats))
            score = _scorer(oracle, self.batch)
            if fmt.space_size <= limit:
                px = _tree_px(oracle, fmt) if char else _whole_px(oracle, fmt, self.batch)
                rankings.append(FormatRanking(fmt, "exact", log_perplexity=px, score=score))
                notes.append(
                    f"{fmt.template!r}: all {fmt.space_size:,} candidates ranked exactly "
                    f"({'tree of next-character distributions' if char else 'one query each'})"
                )
                continue
            if not extrapolate:
                raise ConfigError(
                    f"the canary format {fmt.template!r} has {fmt.space_size:.3g} candidates, "
                    f"more than {limit:,} that can be ranked exactly; enable extrapolation "
                    "(--extrapolate) to estimate exposure from a skew-normal fit"
                )
            rng = np.random.default_rng([knowledge.seed, i, 1])
            texts = fmt.render_many(fmt.sample(self.n_fit, rng))
            px = score(texts)
            rankings.append(
                FormatRanking(
                    fmt, "extrapolated", fit=_fit_skewnorm(px), n_fit=len(px), score=score
                )
            )
            notes.append(
                f"{fmt.template!r}: {fmt.space_size:.3g} candidates; exposure extrapolated from a "
                f"skew-normal fit to {len(px):,} random candidates (Carlini et al. 2019, §5.2)"
            )
        if progress is not None:
            progress("exposure", len(knowledge.formats), len(knowledge.formats))
        return ExposureGuesses(rankings, notes)


def _scorer(oracle: TextOracle, batch: int) -> Callable[[list[str]], np.ndarray]:
    def score(texts: list[str]) -> np.ndarray:
        out = [oracle.log_perplexity(texts[i : i + batch]) for i in range(0, len(texts), batch)]
        return np.concatenate(out) if out else np.zeros(0)

    return score


def _fit_skewnorm(px: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import skewnorm

    a, loc, scale = skewnorm.fit(np.asarray(px, dtype=np.float64))
    return float(a), float(loc), float(scale)


def _whole_px(oracle: TextOracle, fmt: CanaryFormat, batch: int) -> np.ndarray:
    """Px of every candidate, each scored as a whole text."""
    out = []
    for start in range(0, fmt.space_size, batch):
        texts = fmt.render_many(range(start, min(start + batch, fmt.space_size)))
        out.append(oracle.log_perplexity(texts))
    return np.concatenate(out)


def _tree_px(oracle: TextOracle, fmt: CanaryFormat) -> np.ndarray:
    """Px of every candidate, enumerating the space as a tree of prefixes.

    log Pr(s) = log Pr(prefix) + Σ over the following characters of log Pr(c | text so far);
    candidates sharing their first k slots share those terms, so each distinct prefix is asked
    for its next-character distribution once.
    """
    segments = list(fmt.segments)
    lead = segments.pop(0) if isinstance(segments[0], str) else ""
    contexts = [lead]
    logp = np.array([oracle.log_likelihood([lead])[0] if lead else 0.0])
    for k, seg in enumerate(segments):
        last = k == len(segments) - 1
        if isinstance(seg, str):  # literal text: every context continues with it
            for ch in seg:
                logp = logp + oracle.next_char_logprobs(contexts, [ch])[:, 0]
                contexts = [c + ch for c in contexts]
            continue
        if all(len(o) == 1 for o in seg):
            lp = oracle.next_char_logprobs(contexts, list(seg))  # (contexts, options)
        else:  # multi-character options: score each option character by character
            lp = np.zeros((len(contexts), len(seg)))
            for j, option in enumerate(seg):
                ctx = list(contexts)
                for ch in option:
                    lp[:, j] += oracle.next_char_logprobs(ctx, [ch])[:, 0]
                    ctx = [c + ch for c in ctx]
        logp = (logp[:, None] + lp).ravel()
        if not last:  # the last slot's contexts would never be asked
            contexts = [c + o for c in contexts for o in seg]
    return -logp / LN2


def check_space(formats: list[str], *, extrapolate: bool, granularity: str) -> None:
    """Refuse, before training, formats too large to rank exactly without extrapolation."""
    limit = EXACT_LIMIT_CHAR if granularity == "char" else EXACT_LIMIT_TOKEN
    for template in formats:
        fmt = CanaryFormat(template)
        if fmt.space_size > limit and not extrapolate:
            raise ConfigError(
                f"the canary format {template!r} has {fmt.space_size:.3g} candidates, more than "
                f"{limit:,} that can be ranked exactly; pass --extrapolate to estimate exposure "
                "from a skew-normal fit (Carlini et al. 2019), or use a smaller format"
            )
