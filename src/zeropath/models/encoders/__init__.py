"""Vision-language encoders: one interface (:class:`Encoder`), a decorator registry with licence
and gating metadata, real CLIP-family loaders, and offline ``test-tiny`` / ``synthetic`` encoders.
"""

from zeropath.models.encoders.base import (
    Encoder,
    EncoderError,
    EncoderInfo,
    get_encoder,
    get_encoder_info,
    l2_normalise,
    list_encoders,
    register_encoder,
)

__all__ = [
    "Encoder",
    "EncoderError",
    "EncoderInfo",
    "get_encoder",
    "get_encoder_info",
    "l2_normalise",
    "list_encoders",
    "register_encoder",
]
