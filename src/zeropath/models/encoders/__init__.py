"""Vision-language encoders: one interface (:class:`Encoder`), built from rows of the model
registry (:mod:`zeropath.models.catalog`, kind ``encoder``).

One file per job: :mod:`.base` (the interface), :mod:`.preprocess` (CLIP image preprocessing),
:mod:`.tokenizers`, :mod:`.clip` (the CLIP architecture and :class:`~.clip.ClipEncoder`),
:mod:`.openclip` (open_clip → transformers conversion), :mod:`.hf` (Hugging Face hub access),
:mod:`.hub` (factories of the hub models: OpenAI CLIP, PLIP, QuiltNet), :mod:`.conch` (CONCH)
and :mod:`.local` (local model directories). The test-only ``synthetic`` and ``test-tiny``
encoders live in :mod:`zeropath.testing`.
"""

from zeropath.models.encoders.base import Encoder, EncoderError, l2_normalise
from zeropath.models.registry import get_encoder, get_encoder_info, list_encoders

__all__ = [
    "Encoder",
    "EncoderError",
    "get_encoder",
    "get_encoder_info",
    "l2_normalise",
    "list_encoders",
]
