"""Whether a tokenizer belongs to a Hugging Face causal LM, and whether two models tokenize
alike — checked before any score is computed, because a wrong tokenizer yields numbers that look
like scores and mean nothing.

Four checks, each a one-line :class:`~privguard.errors.ModelError` / ``ConfigError``:

* size: a tokenizer with more tokens than the model embeds names ids the model has no row for;
* special tokens: the BOS/EOS ids the model's ``config.json`` declares must be the tokenizer's;
* behaviour (same size, another mapping): on probe texts (the documents themselves) a model fed
  its own tokenizer's ids is about as surprised by each next token as its own prediction is
  uncertain — the mean surprisal −log p(x_t) exceeds the mean entropy H_t of p(·|x_<t) by well
  under a nat on natural text (0.78 nat for SmolLM2-135M on synthetic records). Fed ids from
  another mapping, the model still predicts confidently, but the wrong tokens: 6.6 nats for
  SmolLM2 with its vocabulary permuted. A randomly initialised model predicts near-uniformly and
  is never flagged (surprisal ≈ entropy). Above :data:`GAP_NATS` the tokenizer is refused;
* a reference model (the base a target was fine-tuned from) must encode the probe texts to the
  same ids as the target (:func:`check_same_tokenization`).

:func:`fingerprint` (sha256 of the vocabulary mapping and special ids) is recorded when privguard
fine-tunes a model and compared when it is loaded again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from privguard.errors import ConfigError, ModelError

GAP_NATS = 3.0  # mean surprisal minus mean entropy (nats/token) above which ids are mismatched
PROBE_DOCS = 8


def fingerprint(tok: Any) -> str:
    """sha256 of the tokenizer's token → id mapping and its BOS/EOS/PAD ids."""
    data = {
        "vocab": sorted(tok.get_vocab().items()),
        "special": [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id],
    }
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


def check_tokenizer(predictor: Any, probe: Sequence[str] = (), *, what: str = "the model") -> None:
    """Refuse a tokenizer that is not ``predictor.model``'s (see the module docstring); ``probe``:
    a few texts for the behavioural check (skipped when empty)."""
    model, tok = predictor.model, predictor.tok
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tok) > n_embed:
        raise ModelError(
            f"the tokenizer has {len(tok)} tokens but {what} embeds {n_embed}: it is not this "
            "model's tokenizer; put the model's own tokenizer files in its directory"
        )
    for name in ("bos", "eos"):
        declared = getattr(model.config, f"{name}_token_id", None)
        has = getattr(tok, f"{name}_token_id", None)
        if declared is None or has is None:
            continue
        allowed = set(declared) if isinstance(declared, list | tuple) else {declared}
        if has not in allowed:
            raise ModelError(
                f"{what}'s config.json has {name.upper()} token id {declared} but its tokenizer "
                f"has {has}: it is not this model's tokenizer; put the model's own tokenizer "
                "files in its directory"
            )
    texts = [t for t in probe if t.strip()][:PROBE_DOCS]
    if not texts:
        return
    gap, surprisal, entropy = surprise_gap(predictor, texts)
    if gap > GAP_NATS:
        raise ModelError(
            f"{what} is {surprisal:.1f} nats/token surprised by the probe documents while its "
            f"predictions carry {entropy:.1f} nats of entropy (a model reading its own "
            "tokenizer's ids stays within ~1 nat): the tokenizer maps text to other ids than "
            "the model was trained with; put the model's own tokenizer files in its directory"
        )


def surprise_gap(predictor: Any, texts: Sequence[str]) -> tuple[float, float, float]:
    """``(gap, surprisal, entropy)`` in nats per token over ``texts``: mean −log p(x_t|x_<t),
    mean entropy of p(·|x_<t), and their difference."""
    stats = predictor.token_stats(list(texts), max_tokens=64)
    lp = np.concatenate([s[0] for s in stats])
    mu = np.concatenate([s[1] for s in stats])  # E_v[log p(v|x_<t)] = −entropy
    surprisal, entropy = float(-lp.mean()), float(-mu.mean())
    return surprisal - entropy, surprisal, entropy


def check_same_tokenization(target_tok: Any, ref_tok: Any, probe: Sequence[str], name: str) -> None:
    """Refuse a reference whose tokenizer is not the target's: another vocabulary, or the same
    vocabulary encoding the probe texts to other ids (other merges or normalisation)."""
    theirs, ours = ref_tok.get_vocab(), target_tok.get_vocab()
    if theirs != ours:
        differ = sum(ours.get(k) != v for k, v in theirs.items()) + len(set(ours) - set(theirs))
        raise ConfigError(
            f"the reference model {name} has another vocabulary than the target ({len(ref_tok)} "
            f"vs {len(target_tok)} tokens, {differ} mapped differently); give the base model it "
            "was fine-tuned from"
        )
    for text in probe[:PROBE_DOCS]:
        a = target_tok(text, add_special_tokens=False)["input_ids"]
        b = ref_tok(text, add_special_tokens=False)["input_ids"]
        if list(a) != list(b):
            raise ConfigError(
                f"the reference model {name} tokenizes the documents differently from the target "
                f"(same vocabulary, {len(b)} vs {len(a)} ids for one document); give the base "
                "model it was fine-tuned from"
            )
