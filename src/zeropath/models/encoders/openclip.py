"""open_clip checkpoints (QuiltNet) converted to transformers ``CLIPModel`` weights, so that no
open_clip install is needed: architecture from tensor shapes, key renaming, strict loading."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zeropath.models.encoders.base import EncoderError
from zeropath.models.encoders.clip import ClipArch, ClipEncoder
from zeropath.models.encoders.hf import hub_fix, oneline
from zeropath.models.encoders.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from zeropath.models.encoders.tokenizers import clip_bpe_tokenizer

if TYPE_CHECKING:
    from transformers import CLIPModel

__all__ = [
    "OPENCLIP_WEIGHTS",
    "openclip_arch",
    "openclip_encoder",
    "openclip_to_hf_model",
    "openclip_to_hf_state_dict",
]

#: Weights files of an open_clip model directory, in order of preference.
OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _strip_checkpoint(state: Mapping[str, Any]) -> dict[str, Any]:
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    out = dict(state)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def _count_blocks(state: Mapping[str, Any], prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def openclip_arch(state: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> ClipArch:
    """The :class:`ClipArch` of an open_clip ViT checkpoint, from tensor shapes, with
    ``open_clip_config.json``'s ``model_cfg`` (``config``) deciding what shapes cannot
    (text heads, ``quick_gelu``). Vision heads default to ``width / 64`` as in open_clip."""
    state = _strip_checkpoint(state)
    cfg = dict(config or {})
    if "model_cfg" in cfg:
        cfg = dict(cfg["model_cfg"])
    vision_cfg, text_cfg = dict(cfg.get("vision_cfg", {})), dict(cfg.get("text_cfg", {}))
    if "visual.conv1.weight" not in state:
        raise EncoderError("not an open_clip ViT checkpoint (no visual.conv1.weight)")
    conv = state["visual.conv1.weight"]
    vision_width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = int(state["token_embedding.weight"].shape[1])
    head_width = int(vision_cfg.get("head_width", 64))
    return ClipArch(
        embed_dim=int(state["visual.proj"].shape[1]),
        image_size=grid * patch,
        patch_size=patch,
        vision_width=vision_width,
        vision_layers=_count_blocks(state, "visual.transformer.resblocks."),
        vision_heads=vision_width // head_width,
        text_width=text_width,
        text_layers=_count_blocks(state, "transformer.resblocks."),
        text_heads=int(text_cfg.get("heads", text_width // 64)),
        context_length=int(state["positional_embedding"].shape[0]),
        vocab_size=int(state["token_embedding.weight"].shape[0]),
        mlp_ratio=float(vision_cfg.get("mlp_ratio", 4.0)),
        quick_gelu=bool(cfg.get("quick_gelu", False)),
        bos_token_id=int(state["token_embedding.weight"].shape[0]) - 2,
        eos_token_id=int(state["token_embedding.weight"].shape[0]) - 1,
    )


def _convert_block(state: Mapping[str, Any], src: str, dst: str, out: dict[str, Any]) -> None:
    w, b = state[f"{src}.attn.in_proj_weight"], state[f"{src}.attn.in_proj_bias"]
    for name, wi, bi in zip(("q", "k", "v"), w.chunk(3, dim=0), b.chunk(3, dim=0), strict=True):
        out[f"{dst}.self_attn.{name}_proj.weight"] = wi
        out[f"{dst}.self_attn.{name}_proj.bias"] = bi
    pairs = {
        "attn.out_proj": "self_attn.out_proj",
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
    }
    for a, b_ in pairs.items():
        out[f"{dst}.{b_}.weight"] = state[f"{src}.{a}.weight"]
        out[f"{dst}.{b_}.bias"] = state[f"{src}.{a}.bias"]


#: open_clip keys that carry no weights (buffers, OpenAI JIT metadata).
_OPENCLIP_IGNORED = {"attn_mask", "input_resolution", "context_length", "vocab_size"}


def openclip_to_hf_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an open_clip ViT CLIP state dict to transformers ``CLIPModel`` keys.

    ``visual.conv1`` → ``vision_model.embeddings.patch_embedding``; each block's fused
    ``attn.in_proj_{weight,bias}`` is split into ``q/k/v_proj``; ``ln_pre``/``ln_post`` →
    ``pre_layrnorm``/``post_layernorm``; ``visual.proj`` and ``text_projection`` (stored
    ``in × out``) are transposed into ``nn.Linear`` weights; ``positional_embedding`` →
    ``position_embedding.weight``; ``logit_scale`` is kept. Unknown keys raise, so a checkpoint
    of another architecture is never half-loaded.
    """
    state = _strip_checkpoint(state)
    out: dict[str, Any] = {}
    text, vis = "text_model", "vision_model"
    out[f"{text}.embeddings.token_embedding.weight"] = state["token_embedding.weight"]
    out[f"{text}.embeddings.position_embedding.weight"] = state["positional_embedding"]
    out[f"{text}.final_layer_norm.weight"] = state["ln_final.weight"]
    out[f"{text}.final_layer_norm.bias"] = state["ln_final.bias"]
    out["text_projection.weight"] = state["text_projection"].t().contiguous()
    out[f"{vis}.embeddings.class_embedding"] = state["visual.class_embedding"]
    out[f"{vis}.embeddings.patch_embedding.weight"] = state["visual.conv1.weight"]
    out[f"{vis}.embeddings.position_embedding.weight"] = state["visual.positional_embedding"]
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"{vis}.{b}.weight"] = state[f"visual.{a}.weight"]
        out[f"{vis}.{b}.bias"] = state[f"visual.{a}.bias"]
    out["visual_projection.weight"] = state["visual.proj"].t().contiguous()
    out["logit_scale"] = state["logit_scale"]
    for i in range(_count_blocks(state, "transformer.resblocks.")):
        _convert_block(state, f"transformer.resblocks.{i}", f"{text}.encoder.layers.{i}", out)
    for i in range(_count_blocks(state, "visual.transformer.resblocks.")):
        _convert_block(state, f"visual.transformer.resblocks.{i}", f"{vis}.encoder.layers.{i}", out)
    used = {
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.weight",
        "ln_final.bias",
        "text_projection",
        "visual.class_embedding",
        "visual.conv1.weight",
        "visual.positional_embedding",
        "visual.ln_pre.weight",
        "visual.ln_pre.bias",
        "visual.ln_post.weight",
        "visual.ln_post.bias",
        "visual.proj",
        "logit_scale",
    }
    leftover = [
        k
        for k in state
        if k not in used
        and not k.startswith(("transformer.resblocks.", "visual.transformer.resblocks."))
        and k.rsplit(".", 1)[-1] not in _OPENCLIP_IGNORED
    ]
    if leftover:
        raise EncoderError(
            f"open_clip checkpoint has keys this converter does not know: {sorted(leftover)[:5]}"
        )
    return out


def openclip_to_hf_model(
    state: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> CLIPModel:
    """A transformers ``CLIPModel`` holding an open_clip checkpoint's weights (strict load)."""
    import torch
    from transformers import CLIPModel

    arch = openclip_arch(state, config)
    with torch.device("meta"):
        model = CLIPModel(arch.hf_config())
    converted = openclip_to_hf_state_dict(state)
    missing, unexpected = model.load_state_dict(converted, strict=False, assign=True)
    # position_ids are non-persistent buffers that transformers creates itself
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise EncoderError(
            f"open_clip conversion mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for module in (model.vision_model.embeddings, model.text_model.embeddings):
        n = module.position_embedding.weight.shape[0]
        module.position_ids = torch.arange(n).expand((1, -1))
    left = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise EncoderError(f"open_clip conversion left tensors unset: {left[:3]}")
    return model.float().eval()


def openclip_encoder(
    config_path: Path | None,
    weights: Path,
    *,
    name: str,
    mpp: float,
    licence: str,
    source: str,
    device: str,
    tokenizer_dir: Path | None,
    revision: str | None = None,
    sha256: str | None = None,
    hub_id: str | None = None,
) -> ClipEncoder:
    """A :class:`ClipEncoder` from an open_clip config + weights file, converted on load; the
    weights are hashed as read and checked against ``sha256`` when it is given."""
    from zeropath.errors import ChecksumError, ModelError
    from zeropath.models.weights import load_state_dict

    config: dict[str, Any] = {}
    if config_path is not None:
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise EncoderError(f"{config_path}: unreadable ({oneline(exc)})") from None
    try:
        loaded = load_state_dict(weights, sha256)  # hashed as read; checked when known
    except ChecksumError as exc:
        raise EncoderError(f"{exc}{hub_fix(hub_id)}") from None
    except ModelError as exc:
        raise EncoderError(str(exc)) from None
    model = openclip_to_hf_model(loaded.value, config)
    pre = config.get("preprocess_cfg", {})
    tokenizer = clip_bpe_tokenizer(
        name, int(model.config.text_config.max_position_embeddings), tokenizer_dir
    )
    provenance = {
        "name": name,
        "licence": licence,
        "source": source,
        "revision": revision,
        "sha256": loaded.sha256,  # of the bytes actually loaded
        "weights": weights.name,
        "format": "open_clip",
    }
    return ClipEncoder(
        model,
        tokenizer,
        name=name,
        mpp=mpp,
        provenance=provenance,
        device=device,
        mean=tuple(pre.get("mean", OPENAI_CLIP_MEAN)),
        std=tuple(pre.get("std", OPENAI_CLIP_STD)),
    )
