"""Text tokenizers of the CLIP-family encoders: the offline byte-level one of ``test-tiny`` and
transformers' CLIP BPE (from a model directory or the hub)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zeropath.models.encoders.base import EncoderError
from zeropath.models.encoders.hf import offline, oneline

__all__ = [
    "CLIP_BPE_HUB",
    "ByteTokenizer",
    "HFTokenizer",
    "Tokenizer",
    "clip_bpe_tokenizer",
    "has_hf_tokenizer",
]

CLIP_BPE_HUB = "openai/clip-vit-base-patch32"  # where the standard CLIP BPE vocabulary lives


class ByteTokenizer:
    """Offline byte-level tokenizer of ``test-tiny``: ``[BOS] utf-8 bytes [EOS]``, EOS-padded.

    Lower-cases like CLIP's BPE; ids 0–255 are bytes, 256 BOS, 257 EOS (= pad).
    """

    bos_token_id = 256
    eos_token_id = 257
    vocab_size = 258

    def __init__(self, context_length: int = 32) -> None:
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, attention_mask)``, both ``(T, L)`` int64 with ``L`` the longest sequence."""
        seqs = []
        for text in texts:
            body = list(text.lower().encode("utf-8"))[: self.context_length - 2]
            seqs.append([self.bos_token_id, *body, self.eos_token_id])
        length = max((len(s) for s in seqs), default=2)
        ids = np.full((len(seqs), length), self.eos_token_id, np.int64)
        mask = np.zeros((len(seqs), length), np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        return ids, mask


class HFTokenizer:
    """A transformers tokenizer as ``texts -> (ids, attention_mask)``, truncated to the context."""

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.context_length,
            return_tensors="np",
        )
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


Tokenizer = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]


def has_hf_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in ("tokenizer.json", "vocab.json"))


def clip_bpe_tokenizer(name: str, context_length: int, directory: Path | None = None) -> Tokenizer:
    """The standard CLIP BPE tokenizer: from ``directory`` if it has tokenizer files, else from
    the hub (``openai/clip-vit-base-patch32``, cached copy only when offline)."""
    from transformers import AutoTokenizer

    if directory is not None and has_hf_tokenizer(directory):
        return HFTokenizer(AutoTokenizer.from_pretrained(str(directory)), context_length)
    try:
        tok = AutoTokenizer.from_pretrained(CLIP_BPE_HUB, local_files_only=offline())
    except (OSError, ValueError) as exc:
        where = directory if directory is not None else "DIR"
        raise EncoderError(
            f"encoder {name!r} needs the CLIP BPE tokenizer: put vocab.json and merges.txt in "
            f"{where} (hf download {CLIP_BPE_HUB} vocab.json merges.txt tokenizer.json "
            f"tokenizer_config.json special_tokens_map.json --local-dir {where}) "
            f"({oneline(exc)})"
        ) from None
    return HFTokenizer(tok, context_length)
