"""The oracle of a text model: what an attacker may ask a language model, counted.

Text models answer other questions than classifiers, so they get their own small oracle on the
same bookkeeping as :class:`privguard.oracle.Oracle` (:class:`~privguard.oracle.QueryMeter`: an
access level, a query count and an optional budget). One query is one sequence scored, one
context whose next-character distribution is read, or one sample generated. Scoring texts needs
``probs`` access (an API that returns token log-probabilities, as many LLM APIs do); sampling
alone would need only ``label`` access, but the attacks here score what they sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from privguard.errors import AccessError
from privguard.oracle import Access, QueryMeter

LN2 = float(np.log(2.0))


class TextOracle(QueryMeter):
    """Query interface to a text model.

    Example:
        >>> oracle = target.text_oracle(budget=100_000)
        >>> oracle.log_perplexity(["my pin is 123456"])   # bits
        >>> oracle.queries
        1
    """

    def __init__(self, model, access: Access | str = Access.PROBS, *, budget: int | None = None):
        super().__init__(access, budget=budget)
        self.model = model

    @property
    def granularity(self) -> str:
        """``"char"`` for character-level models (next-character distributions available),
        ``"token"`` otherwise."""
        return getattr(self.model, "granularity", "token")

    def log_likelihood(self, texts: Sequence[str], *, end: bool = False) -> np.ndarray:
        """Natural-log likelihood of each text as a line of its own, ``(n,)`` float64; with
        ``end`` the line's closing newline is included. Needs ``probs`` access."""
        self.require(Access.PROBS)
        texts = list(texts)
        self._count(len(texts))
        return np.asarray(self.model.log_likelihood(texts, end=end), dtype=np.float64)

    def log_perplexity(self, texts: Sequence[str]) -> np.ndarray:
        """Px(s) = −log2 Pr(s), in bits (Carlini et al. 2019)."""
        return -self.log_likelihood(texts) / LN2

    def next_char_logprobs(self, contexts: Sequence[str], chars: Sequence[str]) -> np.ndarray:
        """``(n_contexts, n_chars)`` natural-log probabilities of each character following each
        context (from the start of a line). Character-level models only."""
        self.require(Access.PROBS)
        if self.granularity != "char":
            raise AccessError(
                "next-character distributions need a character-level model; score whole "
                "texts with log_likelihood instead"
            )
        contexts = list(contexts)
        self._count(len(contexts))
        lp = self.model.next_char_logprobs(contexts)
        return lp[:, self.model.char_ids(list(chars))]

    def sample(
        self, n: int, *, max_len: int, seed: int, top_k: int = 40, prefix: str = ""
    ) -> list[str]:
        """``n`` lines sampled from the model with top-k sampling, each cut at its newline."""
        self.require(Access.LABEL)
        self._count(n)
        return list(self.model.sample(n, max_len=max_len, seed=seed, top_k=top_k, prefix=prefix))

    # -- documents (Hugging Face causal LMs) -----------------------------------------------------
    def tokens(self, text: str) -> list[int]:
        """The model's tokenization of ``text`` (the tokenizer ships with the model: no query)."""
        self._documents()
        return list(self.model.tokens(text))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids (the tokenizer's work: no query)."""
        self._documents()
        return str(self.model.tok.decode(list(ids)))

    def token_stats(
        self,
        texts: Sequence[str],
        *,
        max_tokens: int = 128,
        progress: Callable[[str, int, int], None] | None = None,
        label: str = "scoring documents",
        moments: bool = True,
    ) -> list[np.ndarray]:
        """Per text ``(3, n_tokens)`` float64: token log-probabilities and the mean and standard
        deviation of the next-token log-probability at each position (one query per text;
        texts longer than ``max_tokens`` are windowed, see ``HFPredictor.token_stats``);
        ``moments=False``: ``(1, n_tokens)``, the log-probabilities alone.
        ``progress(label, windows done, windows)`` after each batch."""
        self.require(Access.PROBS)
        self._documents()
        texts = list(texts)
        self._count(len(texts))
        return list(
            self.model.token_stats(
                texts, max_tokens=max_tokens, progress=progress, label=label, moments=moments
            )
        )

    def greedy(
        self,
        prefixes: Sequence[Sequence[int]],
        n_new: int,
        *,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> list[list[int]]:
        """Greedy continuations (token ids) of ``n_new`` tokens; one query per prefix. Needs
        only ``label`` access: a generation API returns text, not probabilities."""
        self.require(Access.LABEL)
        self._documents()
        prefixes = [list(p) for p in prefixes]
        self._count(len(prefixes))
        extra = {"progress": progress} if progress is not None else {}  # older text models
        return list(self.model.greedy(prefixes, n_new, **extra))

    def _documents(self) -> None:
        if not hasattr(self.model, "token_stats"):
            raise AccessError(
                "token-level scores need a Hugging Face causal LM (hf:DIR, smollm2); this is a "
                "character LM"
            )
