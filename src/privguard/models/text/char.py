"""The character-level language model: vocabulary, network and its text-model view.

``char-lm`` is a fixed-window neural language model in the style of Bengio et al. ("A Neural
Probabilistic Language Model", JMLR 2003) at the character level: the previous ``window``
characters of the line are embedded, concatenated and fed through one hidden layer to a softmax
over the next character. Every line of the corpus is a sequence of its own (the context starts
padded), and ends with a newline. It is made only of ``Embedding`` and ``Linear`` layers, so
Opacus computes per-sample gradients for it directly (training: :mod:`.char_train`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from privguard.models.text.base import TextModel
from privguard.models.threads import single_thread

PAD, UNK = 0, 1
NEWLINE = "\n"


class Vocab:
    """Characters <-> ids; 0 pads the context, 1 stands for a character never seen in training."""

    def __init__(self, chars: str) -> None:
        self.chars = "".join(sorted(set(chars) | {NEWLINE}))
        self.index = {c: i + 2 for i, c in enumerate(self.chars)}
        self.newline = self.index[NEWLINE]

    def __len__(self) -> int:
        return len(self.chars) + 2

    def encode(self, text: str) -> np.ndarray:
        return np.fromiter((self.index.get(c, UNK) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i - 2] if i >= 2 else "?" for i in ids)


class CharMLP(nn.Module):
    """Next-character model over a fixed window: embed, concatenate, one tanh layer, softmax.

    Input ``(..., window)`` int ids (0 = padding); output ``(..., vocab)`` logits.
    """

    def __init__(self, vocab_size: int, window: int = 24, embed: int = 24, hidden: int = 512):
        super().__init__()
        self.window = window
        self.embed = nn.Embedding(vocab_size, embed)
        self.fc1 = nn.Linear(window * embed, hidden)
        self.fc2 = nn.Linear(hidden, vocab_size)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        e = self.embed(ctx.long())
        h = torch.tanh(self.fc1(e.flatten(-2)))
        return self.fc2(h)


def windows(ids: np.ndarray, window: int) -> np.ndarray:
    """Context windows for predicting each of ``ids`` from the start of a line: ``(len, window)``.

    Row t holds ids[t - window : t], left-padded with 0.
    """
    padded = np.concatenate([np.zeros(window, dtype=np.int64), ids])
    idx = np.arange(len(ids))[:, None] + np.arange(window)[None, :]
    return padded[idx]


class CharLMPredictor(TextModel):
    """A trained :class:`CharMLP` as a text model: likelihoods, next-character distributions and
    sampling, computed in float64 from the logits on one thread."""

    granularity = "char"

    def __init__(self, module: CharMLP, vocab: Vocab, batch: int = 4096) -> None:
        self.module = module.eval()
        self.vocab = vocab
        self.window = module.window
        self.batch = batch

    def _logprobs(self, ctx: np.ndarray) -> np.ndarray:
        out = []
        with single_thread(), torch.no_grad():
            for i in range(0, len(ctx), self.batch):
                logits = self.module(torch.from_numpy(ctx[i : i + self.batch])).double()
                out.append(torch.log_softmax(logits, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.vocab)))

    def next_char_logprobs(self, contexts: Sequence[str]) -> np.ndarray:
        """``(n, vocab)`` log-probabilities of the next character after each context (the
        context is the start of a line)."""
        return self._logprobs(self._last_windows(contexts))

    def _last_windows(self, contexts: Sequence[str]) -> np.ndarray:
        """``(n, window)``: the last ``window`` characters of each context, left-padded."""
        w = self.window
        out = np.zeros((len(contexts), w), dtype=np.int64)
        index = self.vocab.index
        for i, c in enumerate(contexts):
            tail = c[-w:]
            if tail:
                out[i, w - len(tail) :] = [index.get(ch, UNK) for ch in tail]
        return out

    def char_ids(self, chars: Sequence[str]) -> np.ndarray:
        return np.array([self.vocab.index.get(c, UNK) for c in chars], dtype=np.int64)

    def log_likelihood(self, texts: list[str], *, end: bool = False) -> np.ndarray:
        rows, owners, targets = [], [], []
        for i, text in enumerate(texts):
            ids = self.vocab.encode(text)
            if end:
                ids = np.append(ids, self.vocab.newline)
            rows.append(windows(ids, self.window))
            targets.append(ids)
            owners.append(np.full(len(ids), i))
        if not rows:
            return np.zeros(0)
        lp = self._logprobs(np.concatenate(rows))
        tg = np.concatenate(targets)
        per = lp[np.arange(len(tg)), tg]
        return np.bincount(np.concatenate(owners), weights=per, minlength=len(texts))

    def sample(
        self, n: int, *, max_len: int, seed: int, top_k: int = 40, prefix: str = ""
    ) -> list[str]:
        rng = np.random.default_rng(seed)
        seqs = [list(self.vocab.encode(prefix)) for _ in range(n)]
        done = np.zeros(n, dtype=bool)
        for _ in range(max_len):
            live = np.flatnonzero(~done)
            if not len(live):
                break
            w = self.window
            ctx = np.zeros((len(live), w), dtype=np.int64)
            for row, i in enumerate(live):
                tail = seqs[i][-w:]
                if tail:
                    ctx[row, w - len(tail) :] = tail
            lp = self._logprobs(ctx)
            lp[:, :2] = -np.inf  # never emit padding or the unknown character
            nxt = _sample_top_k(lp, top_k, rng)
            for i, c in zip(live, nxt, strict=True):
                if c == self.vocab.newline:
                    done[i] = True
                else:
                    seqs[i].append(int(c))
        return [self.vocab.decode(s) for s in seqs]


def _sample_top_k(logprobs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    k = min(k, logprobs.shape[1])
    top = np.argpartition(-logprobs, k - 1, axis=1)[:, :k]
    lp = np.take_along_axis(logprobs, top, axis=1)
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random(len(p))[:, None]
    pick = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), k - 1)
    return top[np.arange(len(top)), pick]
