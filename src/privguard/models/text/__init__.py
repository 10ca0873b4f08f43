"""Text targets: a small character-level language model trained on CPU, and Hugging Face causal
language models loaded from a local directory, with their corpus, canaries and persistence.

- :mod:`.base`: the :class:`TextModel` interface text oracles query; shared measures.
- :mod:`.char`: the character LM (vocabulary, network, its text-model view).
- :mod:`.char_train`: training it (:class:`LMConfig`, :func:`train_char_lm`; DP-SGD per line).
- :mod:`.hf`: Hugging Face causal LMs loaded offline; :mod:`.hf_tune`: fine-tuning them.
- :mod:`.target`: :class:`TextTarget`, its model directory, :func:`load_text_target`.
- :mod:`.train`: what ``privguard train`` does for a text model (:func:`train_text_target`).
"""

from privguard.models.text.base import TEXT_KINDS, TextModel
from privguard.models.text.char import CharLMPredictor, CharMLP, Vocab
from privguard.models.text.char_train import LMConfig, train_char_lm
from privguard.models.text.hf import HFPredictor, is_hf_source, load_hf, resolve_hf, smollm2_dir
from privguard.models.text.hf_tune import HFTuneConfig, finetune_hf
from privguard.models.text.target import TextTarget, is_text_model, load_text_target
from privguard.models.text.train import is_text_model_name, train_text_target

__all__ = [
    "TEXT_KINDS",
    "CharLMPredictor",
    "CharMLP",
    "HFPredictor",
    "HFTuneConfig",
    "LMConfig",
    "TextModel",
    "TextTarget",
    "Vocab",
    "finetune_hf",
    "is_hf_source",
    "is_text_model",
    "is_text_model_name",
    "load_hf",
    "load_text_target",
    "resolve_hf",
    "smollm2_dir",
    "train_char_lm",
    "train_text_target",
]
