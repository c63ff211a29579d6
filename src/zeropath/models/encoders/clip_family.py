"""CLIP-family encoders on torch + transformers: OpenAI CLIP, PLIP, QuiltNet, CONCH, test-tiny.

Every CLIP-architecture model (OpenAI CLIP ViT-B/16, PLIP, QuiltNet, the random ``test-tiny``)
runs through one class, :class:`ClipEncoder`, on a transformers ``CLIPModel``:

- images are preprocessed exactly as CLIP was trained (:func:`clip_preprocess`: shortest side to
  ``input_size`` with PIL bicubic, centre crop, OpenAI mean/std), in numpy + PIL, no torchvision;
- ``encode_patches`` projects the vision tower's last-layer patch tokens through
  ``post_layernorm`` and ``visual_projection`` into the shared space. This is the common
  MaskCLIP-style approximation (the tokens were never trained against text, so their similarities
  are coarser than the pooled embedding's, but they localise);
- QuiltNet ships in open_clip format; :func:`openclip_to_hf_state_dict` converts its keys to the
  transformers layout, so no open_clip install is needed.

CONCH (CoCa with a timm ViT) is wrapped through the optional ``conch`` package only
(:class:`ConchEncoder`); its code is not vendored.

Weights come from a local directory (``--encoder DIR`` or ``ZEROPATH_ENCODER_<NAME>=DIR``),
whose layout :func:`load_directory` recognises, or from the Hugging Face hub. Without network
(or with ``HF_HUB_OFFLINE=1``) a missing model is an :class:`EncoderError` with one line saying
how to fetch it. Importing this module is cheap: torch and transformers load inside functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zeropath.models.encoders.base import Encoder, EncoderError, l2_normalise, register_encoder

if TYPE_CHECKING:
    from transformers import CLIPConfig, CLIPModel

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "QUILTNET_B_32",
    "TEST_TINY",
    "VIT_B_16",
    "VIT_B_32",
    "ByteTokenizer",
    "ClipArch",
    "ClipEncoder",
    "ConchEncoder",
    "build_test_tiny",
    "clip_preprocess",
    "load_directory",
    "openclip_arch",
    "openclip_to_hf_state_dict",
    "save_test_tiny",
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Small marker file zeropath writes next to weights it saves (tokenizer kind, µm/px, licence).
META_FILE = "zeropath-encoder.json"
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_CLIP_BPE_HUB = "openai/clip-vit-base-patch32"  # where the standard CLIP BPE vocabulary lives
_DEFAULT_MPP = 0.5


# ------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class ClipArch:
    """The hyperparameters that fix a CLIP ViT's architecture (open_clip naming).

    ``quick_gelu`` is True for OpenAI-trained weights (and PLIP, fine-tuned from them) and False
    for open_clip's plain ``ViT-B-32`` config (QuiltNet), which uses ``nn.GELU``.
    """

    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408
    mlp_ratio: float = 4.0
    quick_gelu: bool = True
    bos_token_id: int = 49406
    eos_token_id: int = 49407

    def hf_config(self) -> CLIPConfig:
        """The equivalent transformers ``CLIPConfig`` (EOS pooling by first EOS token)."""
        from transformers import CLIPConfig

        act = "quick_gelu" if self.quick_gelu else "gelu"
        return CLIPConfig(
            projection_dim=self.embed_dim,
            text_config={
                "vocab_size": self.vocab_size,
                "hidden_size": self.text_width,
                "intermediate_size": int(self.text_width * self.mlp_ratio),
                "num_hidden_layers": self.text_layers,
                "num_attention_heads": self.text_heads,
                "max_position_embeddings": self.context_length,
                "hidden_act": act,
                "projection_dim": self.embed_dim,
                "bos_token_id": self.bos_token_id,
                "eos_token_id": self.eos_token_id,
                "pad_token_id": self.eos_token_id,
            },
            vision_config={
                "hidden_size": self.vision_width,
                "intermediate_size": int(self.vision_width * self.mlp_ratio),
                "num_hidden_layers": self.vision_layers,
                "num_attention_heads": self.vision_heads,
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "hidden_act": act,
                "projection_dim": self.embed_dim,
            },
        )


#: OpenAI CLIP ViT-B/16 (``openai/clip-vit-base-patch16``).
VIT_B_16 = ClipArch(patch_size=16)
#: OpenAI CLIP ViT-B/32, the architecture of PLIP (``vinid/plip``).
VIT_B_32 = ClipArch(patch_size=32)
#: open_clip ``ViT-B-32`` (plain GELU), the architecture of QuiltNet (``wisdomik/QuiltNet-B-32``).
QUILTNET_B_32 = ClipArch(patch_size=32, quick_gelu=False)
#: The random ``test-tiny`` model: 64-px input, 4×4 patch grid, byte-level text.
TEST_TINY = ClipArch(
    embed_dim=16,
    image_size=64,
    patch_size=16,
    vision_width=32,
    vision_layers=2,
    vision_heads=2,
    text_width=32,
    text_layers=2,
    text_heads=2,
    context_length=32,
    vocab_size=258,
    bos_token_id=256,
    eos_token_id=257,
)


# ------------------------------------------------------------------------------ preprocessing
def clip_preprocess(
    images: np.ndarray,
    size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 → ``(N, 3, size, size)`` float32, as CLIP was trained.

    Shortest side resized to ``size`` with PIL bicubic (long side ``int(size * long / short)``),
    centre crop (offset ``(extent - size) // 2``), scaled to [0, 1], normalised by ``mean``/``std``
    — the same arithmetic as transformers' ``CLIPImageProcessor`` (and torchvision's
    ``Resize(size, BICUBIC) + CenterCrop``, up to its half-pixel rounding of odd crop offsets).
    """
    from PIL import Image

    images = _as_uint8_batch(images)
    out = np.empty((len(images), size, size, 3), np.uint8)

    def one(i: int) -> None:
        img = images[i]
        h, w = img.shape[:2]
        if min(h, w) != size:
            if w <= h:
                new_w, new_h = size, int(size * h / w)
            else:
                new_w, new_h = int(size * w / h), size
            img = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.Resampling.BICUBIC))
            h, w = new_h, new_w
        top, left = (h - size) // 2, (w - size) // 2
        out[i] = img[top : top + size, left : left + size]

    workers = min(len(images), os.cpu_count() or 1, 16)
    if workers > 1 and images.shape[1:3] != (size, size):
        # PIL's resize releases the GIL: on a GPU machine the CPU resize was the bottleneck
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(len(images))))
    else:
        for i in range(len(images)):
            one(i)
    x = out.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _as_uint8_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {images.shape}")
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return images


# --------------------------------------------------------------------------------- tokenizers
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


# ------------------------------------------------------------------------------------ encoder
class ClipEncoder(Encoder):
    """A transformers ``CLIPModel`` behind the :class:`Encoder` interface (float32, eval mode).

    Images go through :func:`clip_preprocess` in batches of ``batch_size`` under
    ``torch.inference_mode``; the thread count is left to the caller (``torch.set_num_threads``).
    """

    def __init__(
        self,
        model: CLIPModel,
        tokenizer: Tokenizer,
        *,
        name: str,
        mpp: float,
        provenance: Mapping[str, Any],
        device: str = "cpu",
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        batch_size: int = 32,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.model = model.float().eval().to(self.device)
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.mpp = float(mpp)
        self.input_size = int(model.config.vision_config.image_size)
        self.patch_size = int(model.config.vision_config.patch_size)
        self.embed_dim = int(model.config.projection_dim)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.batch_size = int(batch_size)
        self.logit_scale = float(model.logit_scale.detach().exp().cpu())
        self.provenance = dict(provenance)

    def _vision(self, images: np.ndarray, patches: bool) -> np.ndarray:
        import torch

        images = _as_uint8_batch(images)
        grid = self.input_size // self.patch_size
        shape = (
            (len(images), grid, grid, self.embed_dim) if patches else (len(images), self.embed_dim)
        )
        out = np.empty(shape, np.float32)
        vision = self.model.vision_model
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            pixels = torch.from_numpy(clip_preprocess(batch, self.input_size, self.mean, self.std))
            pixels = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                hidden = vision(pixel_values=pixels).last_hidden_state  # (b, 1 + g*g, width)
                tokens = hidden[:, 1:] if patches else hidden[:, 0]
                emb = self.model.visual_projection(vision.post_layernorm(tokens))
            emb_np = emb.float().cpu().numpy()
            if patches:
                emb_np = emb_np.reshape(len(batch), grid, grid, self.embed_dim)
            out[start : start + len(batch)] = emb_np
        return l2_normalise(out)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 → ``(N, D)`` unit image embeddings (pooled CLS, projected)."""
        return self._vision(images, patches=False)

    def encode_patches(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 → ``(N, g, g, D)`` unit patch embeddings (MaskCLIP-style)."""
        return self._vision(images, patches=True)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``T`` strings → ``(T, D)`` unit text embeddings (EOS token, projected)."""
        import torch

        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not one string")
        texts = list(texts)
        out = np.empty((len(texts), self.embed_dim), np.float32)
        step = max(self.batch_size, 64)
        for start in range(0, len(texts), step):
            ids, mask = self.tokenizer(texts[start : start + step])
            with torch.inference_mode():
                result = self.model.text_model(
                    input_ids=torch.from_numpy(ids).to(self.device),
                    attention_mask=torch.from_numpy(mask).to(self.device),
                )
                emb = self.model.text_projection(result.pooler_output)
            out[start : start + len(ids)] = emb.float().cpu().numpy()
        return l2_normalise(out)


# ------------------------------------------------------------------------------ test-tiny model
def build_test_tiny(seed: int = 0) -> CLIPModel:
    """The randomly initialised :data:`TEST_TINY` ``CLIPModel``, identical for the same ``seed``
    (the global torch RNG is forked, so callers' random state is untouched)."""
    import torch
    from transformers import CLIPModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(TEST_TINY.hf_config())
    return model.eval()


_TEST_TINY_MPP = 1.0


def _test_tiny_encoder(model: CLIPModel, device: str, provenance: Mapping[str, Any]) -> ClipEncoder:
    return ClipEncoder(
        model,
        ByteTokenizer(TEST_TINY.context_length),
        name="test-tiny",
        mpp=_TEST_TINY_MPP,
        provenance=provenance,
        device=device,
    )


def save_test_tiny(directory: str | os.PathLike[str], seed: int = 0) -> Path:
    """Save the ``test-tiny`` model as a transformers directory (+ ``zeropath-encoder.json``), so
    that :func:`load_directory` exercises the real local-directory path offline."""
    directory = Path(directory)
    build_test_tiny(seed).save_pretrained(directory)
    meta = {
        "kind": "clip",
        "name": "test-tiny",
        "tokenizer": "bytes",
        "mpp": _TEST_TINY_MPP,
        "licence": "Apache-2.0",
        "seed": seed,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


@register_encoder(
    "test-tiny",
    licence="Apache-2.0",
    gated=False,
    commercial_use=True,
    extra="vlm",
    mpp=_TEST_TINY_MPP,
    input_size=TEST_TINY.image_size,
    description="random tiny CLIP (seed 0) exercising the real CLIP code path offline",
    meta={"source": "builtin"},
)
def _test_tiny_factory(path: str | None, device: str = "cpu") -> Encoder:
    if path is not None:
        return load_directory(path, device)
    _require_transformers("test-tiny")
    return _test_tiny_encoder(
        build_test_tiny(0),
        device,
        {
            "name": "test-tiny",
            "licence": "Apache-2.0",
            "source": "builtin",
            "revision": "seed-0",
            "seed": 0,
        },
    )


# ------------------------------------------------------------------------ open_clip conversion
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


# -------------------------------------------------------------------------------- loading
def _require_transformers(name: str) -> None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise EncoderError(
            f"encoder {name!r} needs transformers: pip install 'zeropath[vlm]'"
        ) from None


def _offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def env_var(name: str) -> str:
    """``ZEROPATH_ENCODER_<NAME>``: the variable that points encoder ``name`` at a local dir."""
    return "ZEROPATH_ENCODER_" + "".join(c if c.isalnum() else "_" for c in name.upper())


def _oneline(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unavailable(name: str, hub_id: str, exc: BaseException | None = None) -> EncoderError:
    why = f" ({_oneline(exc)})" if exc is not None else ""
    return EncoderError(
        f"encoder {name!r} is not available offline: download it on a machine with internet "
        f"(hf download {hub_id} --local-dir DIR) and pass --encoder DIR, "
        f"or set {env_var(name)}=DIR{why}"
    )


def _weights_file(directory: Path, candidates: Sequence[str]) -> Path | None:
    for candidate in candidates:
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    from zeropath.models.cache import sha256_file

    return sha256_file(path)


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EncoderError(f"{path}: unreadable ({_oneline(exc)})") from None
    if not isinstance(meta, dict):
        raise EncoderError(f"{path}: expected a JSON object")
    return meta


def _has_hf_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in ("tokenizer.json", "vocab.json"))


def _clip_bpe_tokenizer(name: str, context_length: int, directory: Path | None = None) -> Tokenizer:
    """The standard CLIP BPE tokenizer: from ``directory`` if it has tokenizer files, else from
    the hub (``openai/clip-vit-base-patch32``, cached copy only when offline)."""
    from transformers import AutoTokenizer

    if directory is not None and _has_hf_tokenizer(directory):
        return HFTokenizer(AutoTokenizer.from_pretrained(str(directory)), context_length)
    try:
        tok = AutoTokenizer.from_pretrained(_CLIP_BPE_HUB, local_files_only=_offline())
    except (OSError, ValueError) as exc:
        where = directory if directory is not None else "DIR"
        raise EncoderError(
            f"encoder {name!r} needs the CLIP BPE tokenizer: put vocab.json and merges.txt in "
            f"{where} (hf download {_CLIP_BPE_HUB} vocab.json merges.txt tokenizer.json "
            f"tokenizer_config.json special_tokens_map.json --local-dir {where}) "
            f"({_oneline(exc)})"
        ) from None
    return HFTokenizer(tok, context_length)


def _load_hf_dir(
    directory: Path, device: str, meta: Mapping[str, Any], name: str, mpp: float, licence: str
) -> ClipEncoder:
    from transformers import CLIPModel

    try:
        model = CLIPModel.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise EncoderError(f"{directory}: cannot load the CLIP model ({_oneline(exc)})") from None
    ctx = int(model.config.text_config.max_position_embeddings)
    if meta.get("tokenizer") == "bytes":
        tokenizer: Tokenizer = ByteTokenizer(ctx)
    elif _has_hf_tokenizer(directory) or model.config.text_config.vocab_size == 49408:
        tokenizer = _clip_bpe_tokenizer(name, ctx, directory)
    else:
        raise EncoderError(f"{directory}: no tokenizer files (tokenizer.json or vocab.json)")
    weights = _weights_file(directory, _HF_WEIGHTS)
    provenance = {
        "name": name,
        "licence": licence,
        "source": str(directory),
        "sha256": _sha256(weights),
        "weights": None if weights is None else weights.name,
    }
    return ClipEncoder(
        model,
        tokenizer,
        name=name,
        mpp=mpp,
        provenance=provenance,
        device=device,
        **_mean_std(directory),
    )


def _mean_std(directory: Path) -> dict[str, tuple[float, ...]]:
    """``image_mean``/``image_std`` from ``preprocessor_config.json`` when present."""
    path = directory / "preprocessor_config.json"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text())
            return {"mean": tuple(cfg["image_mean"]), "std": tuple(cfg["image_std"])}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD}


def _openclip_encoder(
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
    from zeropath.errors import ChecksumError, ModelError
    from zeropath.models.weights import load_state_dict

    config: dict[str, Any] = {}
    if config_path is not None:
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise EncoderError(f"{config_path}: unreadable ({_oneline(exc)})") from None
    try:
        loaded = load_state_dict(weights, sha256)  # hashed as read; checked when known
    except ChecksumError as exc:
        raise EncoderError(f"{exc}{_hub_fix(hub_id)}") from None
    except ModelError as exc:
        raise EncoderError(str(exc)) from None
    model = openclip_to_hf_model(loaded.value, config)
    pre = config.get("preprocess_cfg", {})
    tokenizer = _clip_bpe_tokenizer(
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


def load_directory(
    path: str | os.PathLike[str],
    device: str = "cpu",
    *,
    name: str | None = None,
    mpp: float | None = None,
    licence: str | None = None,
) -> Encoder:
    """Build the encoder stored in a local directory, recognising its layout by its files.

    - ``zeropath-encoder.json`` with ``"kind": "synthetic"`` → :class:`SyntheticEncoder`;
    - ``config.json`` with ``model_type`` ``clip`` → transformers CLIP (OpenAI CLIP, PLIP,
      a saved ``test-tiny``), tokenizer from the directory;
    - ``open_clip_config.json`` / ``open_clip_*model*`` → open_clip CLIP (QuiltNet), converted;
    - ``pytorch_model.bin`` + ``meta.yaml`` (the CONCH hub layout) → CONCH via its package.

    ``name`` and ``licence`` come from the registry when a registered encoder is pointed at the
    directory, else from ``zeropath-encoder.json``, else the path and "unknown"; ``mpp`` from
    ``zeropath-encoder.json``, else the registry, else 0.5. The weights' SHA-256 goes into the
    provenance.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise EncoderError(f"{directory}: not a directory holding an encoder")
    meta = _read_meta(directory)
    if meta.get("kind") == "synthetic":
        from zeropath.models.encoders.synthetic import SyntheticEncoder

        return SyntheticEncoder.from_config(meta, name=name or str(directory))
    name = name or str(meta.get("name") or directory)
    mpp = float(meta.get("mpp", mpp if mpp is not None else _DEFAULT_MPP))
    licence = licence or str(meta.get("licence", "unknown (local directory)"))

    config_json = directory / "config.json"
    if config_json.is_file():
        try:
            model_type = json.loads(config_json.read_text()).get("model_type")
        except (OSError, ValueError) as exc:
            raise EncoderError(f"{config_json}: unreadable ({_oneline(exc)})") from None
        if model_type != "clip":
            raise EncoderError(
                f"{directory}: config.json has model_type {model_type!r}; only 'clip' models "
                "load from a transformers directory"
            )
        _require_transformers(name)
        return _load_hf_dir(directory, device, meta, name, mpp, licence)

    openclip_weights = _weights_file(directory, _OPENCLIP_WEIGHTS)
    openclip_config = directory / "open_clip_config.json"
    if openclip_weights is not None or openclip_config.is_file():
        if openclip_weights is None:
            raise EncoderError(f"{directory}: open_clip_config.json but no {_OPENCLIP_WEIGHTS[1]}")
        _require_transformers(name)
        return _openclip_encoder(
            openclip_config if openclip_config.is_file() else None,
            openclip_weights,
            name=name,
            mpp=mpp,
            licence=licence,
            source=str(directory),
            device=device,
            tokenizer_dir=directory,
        )

    if (directory / "pytorch_model.bin").is_file() and (directory / "meta.yaml").is_file():
        return _conch_factory(str(directory), device)

    raise EncoderError(
        f"{directory}: no encoder recognised (expected config.json of a CLIP model, "
        f"open_clip_config.json + {_OPENCLIP_WEIGHTS[1]}, or {META_FILE})"
    )


# ------------------------------------------------------------------------- registered models
def _row(name: str) -> Any:
    """The registry row of ``name`` (None for an unregistered factory, e.g. in tests)."""
    from zeropath.models.encoders.base import _REGISTRY

    return _REGISTRY.get(name)


def _hub_fix(hub_id: str | None) -> str:
    if not hub_id:
        return ""
    return (
        f"; delete it from the Hugging Face cache or run "
        f"`hf download {hub_id} --force-download` (then retry)"
    )


def _blob_sha256(path: Path) -> str | None:
    """The SHA-256 a hub-cache file must have: Git LFS blobs are stored under their digest
    (``.../blobs/<sha256>``, linked from ``snapshots/<commit>/<file>``); None otherwise."""
    import re

    try:
        name = path.resolve().name
    except OSError:
        return None
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else None


def _hub_weights(hub_id: str, commit: str | None) -> Path | None:
    """The cached weights file of ``hub_id`` at ``commit`` (transformers layout), if any."""
    if not commit:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in _HF_WEIGHTS:
        found = try_to_load_from_cache(hub_id, filename, revision=commit)
        if isinstance(found, str):
            return Path(found)
    return None


@dataclass(frozen=True)
class _HubClip:
    """A CLIP model on the hub in transformers format.

    The hub revision comes from the encoder's registry row (:attr:`EncoderInfo.revision`),
    else ``revision``; the commit actually loaded and the SHA-256 of its weights file (checked
    against the Git LFS digest its hub-cache blob is named by) go into the provenance.
    """

    name: str
    hub_id: str
    revision: str | None
    mpp: float
    licence: str

    def resolved_revision(self) -> str | None:
        row = _row(self.name)
        return (row.revision if row is not None else None) or self.revision

    def __call__(self, path: str | None, device: str = "cpu") -> Encoder:
        path = path or os.environ.get(env_var(self.name))
        if path:
            return load_directory(path, device, name=self.name, mpp=self.mpp, licence=self.licence)
        _require_transformers(self.name)
        from transformers import AutoTokenizer, CLIPModel

        from zeropath.errors import ChecksumError
        from zeropath.models.weights import verify_file

        offline = _offline()
        revision = self.resolved_revision()
        try:
            model = CLIPModel.from_pretrained(
                self.hub_id, revision=revision, local_files_only=offline
            )
            tok = AutoTokenizer.from_pretrained(
                self.hub_id, revision=revision, local_files_only=offline
            )
        except (OSError, ValueError) as exc:
            raise _unavailable(self.name, self.hub_id, exc) from None
        commit = getattr(model.config, "_commit_hash", None)
        weights = _hub_weights(self.hub_id, commit)
        sha256 = None
        if weights is not None:
            try:
                sha256 = verify_file(weights, _blob_sha256(weights))
            except ChecksumError as exc:
                raise EncoderError(f"{exc}{_hub_fix(self.hub_id)}") from None
        provenance = {
            "name": self.name,
            "licence": self.licence,
            "source": f"hf:{self.hub_id}",
            "revision": commit or revision,
            "requested_revision": revision,
            "sha256": sha256,
            "weights": None if weights is None else weights.name,
        }
        return ClipEncoder(
            model,
            HFTokenizer(tok, int(model.config.text_config.max_position_embeddings)),
            name=self.name,
            mpp=self.mpp,
            provenance=provenance,
            device=device,
        )


@dataclass(frozen=True)
class _HubOpenClip:
    """A CLIP model on the hub in open_clip format (converted on load).

    Revision as for :class:`_HubClip`; the weights are hashed as they are loaded and checked
    against the registry row's ``sha256`` when it pins one, else against the Git LFS digest
    of the hub-cache blob.
    """

    name: str
    hub_id: str
    revision: str | None
    mpp: float
    licence: str

    def resolved_revision(self) -> str | None:
        row = _row(self.name)
        return (row.revision if row is not None else None) or self.revision

    def __call__(self, path: str | None, device: str = "cpu") -> Encoder:
        path = path or os.environ.get(env_var(self.name))
        if path:
            return load_directory(path, device, name=self.name, mpp=self.mpp, licence=self.licence)
        _require_transformers(self.name)
        from huggingface_hub import hf_hub_download

        offline = _offline()
        revision = self.resolved_revision()
        try:
            config = hf_hub_download(
                self.hub_id,
                "open_clip_config.json",
                revision=revision,
                local_files_only=offline,
            )
            weights = hf_hub_download(
                self.hub_id,
                _OPENCLIP_WEIGHTS[1],
                revision=revision,
                local_files_only=offline,
            )
        except (OSError, ValueError) as exc:
            raise _unavailable(self.name, self.hub_id, exc) from None
        row = _row(self.name)
        pinned = row.sha256 if row is not None else None
        return _openclip_encoder(
            Path(config),
            Path(weights),
            name=self.name,
            mpp=self.mpp,
            licence=self.licence,
            source=f"hf:{self.hub_id}",
            device=device,
            tokenizer_dir=None,
            revision=_snapshot_revision(Path(weights)) or revision,
            sha256=pinned or _blob_sha256(Path(weights)),
            hub_id=self.hub_id,
        )


def _snapshot_revision(path: Path) -> str | None:
    """The commit hash in a hub-cache path ``.../snapshots/<commit>/<file>``, if it is one."""
    parts = path.parts
    if len(parts) >= 3 and parts[-3] == "snapshots":
        return parts[-2]
    return None


#: Hub commits the encoders are pinned to. None means "the hub's main branch", resolved at
#: download time: the commit actually loaded is recorded in the provenance (``revision``).
#: Set a 40-hex commit here (or a plugin's registry row) once it has been checked.
_REVISIONS: dict[str, str | None] = {"openai-clip": None, "plip": None, "quiltnet": None}

_MPP_NOTE = (
    "0.5 µm/px (20x) is the customary tile resolution for this model in pathology work, "
    "not a property stated by its authors"
)

register_encoder(
    "openai-clip",
    licence="MIT",
    gated=False,
    commercial_use=True,
    hub_id="openai/clip-vit-base-patch16",
    extra="vlm",
    mpp=0.5,
    input_size=224,
    description="OpenAI CLIP ViT-B/16 (natural images; a baseline for the pathology models)",
    revision=_REVISIONS["openai-clip"],
    meta={"arch": "ViT-B/16", "mpp_note": _MPP_NOTE},
)(_HubClip("openai-clip", "openai/clip-vit-base-patch16", _REVISIONS["openai-clip"], 0.5, "MIT"))

_PLIP_LICENCE = "unspecified (see model card)"
_PLIP_NOTE = (
    "the vinid/plip model card declares no licence; it copies OpenAI CLIP's intended-use text "
    "(a research output; any deployed use, commercial or not, out of scope), and the training "
    "data are Twitter posts"
)
register_encoder(
    "plip",
    licence=_PLIP_LICENCE,
    gated=False,
    commercial_use=False,
    hub_id="vinid/plip",
    extra="vlm",
    mpp=0.5,
    input_size=224,
    description="PLIP: CLIP ViT-B/32 fine-tuned on OpenPath (pathology tweets)",
    revision=_REVISIONS["plip"],
    meta={"arch": "ViT-B/32", "mpp_note": _MPP_NOTE, "licence_note": _PLIP_NOTE},
)(_HubClip("plip", "vinid/plip", _REVISIONS["plip"], 0.5, _PLIP_LICENCE))

register_encoder(
    "quiltnet",
    licence="MIT",
    gated=False,
    commercial_use=True,
    hub_id="wisdomik/QuiltNet-B-32",
    extra="vlm",
    mpp=0.5,
    input_size=224,
    description="QuiltNet: open_clip ViT-B/32 trained on Quilt-1M (converted to transformers)",
    revision=_REVISIONS["quiltnet"],
    meta={"arch": "ViT-B/32 (open_clip, GELU)", "format": "open_clip", "mpp_note": _MPP_NOTE},
)(_HubOpenClip("quiltnet", "wisdomik/QuiltNet-B-32", _REVISIONS["quiltnet"], 0.5, "MIT"))


# ----------------------------------------------------------------------------------- CONCH
_CONCH_HUB = "MahmoodLab/conch"
_CONCH_LICENCE = "CC-BY-NC-ND-4.0"
_CONCH_SIZE = 448


def _conch_missing() -> EncoderError:
    return EncoderError(
        "encoder 'conch' needs the CONCH package and its gated weights: accept the licence at "
        f"https://huggingface.co/{_CONCH_HUB}, "
        "pip install git+https://github.com/Mahmoodlab/CONCH, "
        f"and set HF_TOKEN, or pass a local checkpoint (--encoder DIR or {env_var('conch')}=DIR "
        "holding pytorch_model.bin)"
    )


class ConchEncoder(Encoder):
    """CONCH (ViT-B/16 CoCa, 448 px) through the ``conch`` package's model object.

    Images use :func:`clip_preprocess` at 448 px with the OpenAI mean/std (what CONCH's own
    transform does, without torchvision); embeddings are CONCH's contrastive projections.
    CONCH pools with an attentional pooler, so there are no projected patch tokens:
    :meth:`encode_patches` returns ``None``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        tokenize: Callable[..., Any],
        *,
        provenance: Mapping[str, Any],
        device: str = "cpu",
        batch_size: int = 32,
        mpp: float = 0.5,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.model = model.float().eval().to(self.device)
        self.tokenizer = tokenizer
        self._tokenize = tokenize
        self.name = "conch"
        size = getattr(getattr(model, "visual", None), "image_size", _CONCH_SIZE)
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mpp = float(mpp)
        self.embed_dim = int(getattr(model, "embed_dim", 512))
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = 100.0 if scale is None else float(scale.detach().exp().cpu())
        self.batch_size = int(batch_size)
        self.provenance = dict(provenance)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = _as_uint8_batch(images)
        out = np.empty((len(images), self.embed_dim), np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            pixels = torch.from_numpy(clip_preprocess(batch, self.input_size)).to(self.device)
            with torch.inference_mode():
                emb = self.model.encode_image(pixels, proj_contrast=True, normalize=True)
            out[start : start + len(batch)] = emb.float().cpu().numpy()
        return l2_normalise(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings, not one string")
        texts = list(texts)
        out = np.empty((len(texts), self.embed_dim), np.float32)
        for start in range(0, len(texts), 64):
            chunk = texts[start : start + 64]
            tokens = self._tokenize(tokenizer=self.tokenizer, texts=chunk).to(self.device)
            with torch.inference_mode():
                emb = self.model.encode_text(tokens)
            out[start : start + len(chunk)] = emb.float().cpu().numpy()
        return l2_normalise(out)


@register_encoder(
    "conch",
    licence=_CONCH_LICENCE,
    gated=True,
    commercial_use=False,
    hub_id=_CONCH_HUB,
    extra=None,
    mpp=0.5,
    input_size=_CONCH_SIZE,
    description="CONCH ViT-B/16 (Mahmood Lab); needs the conch package and accepted terms",
    meta={"package": "git+https://github.com/Mahmoodlab/CONCH", "model_cfg": "conch_ViT-B-16"},
)
def _conch_factory(path: str | None, device: str = "cpu") -> Encoder:
    """CONCH from a local checkpoint (a directory with ``pytorch_model.bin`` or the file itself)
    or from the gated hub repo with ``HF_TOKEN``; needs the ``conch`` package."""
    try:
        from conch.open_clip_custom import create_model_from_pretrained, get_tokenizer, tokenize
    except ImportError:
        raise _conch_missing() from None
    path = path or os.environ.get(env_var("conch"))
    provenance: dict[str, Any] = {"name": "conch", "licence": _CONCH_LICENCE}
    if path:
        checkpoint = Path(path).expanduser()
        if checkpoint.is_dir():
            checkpoint = checkpoint / "pytorch_model.bin"
        if not checkpoint.is_file():
            raise EncoderError(f"{checkpoint}: no CONCH checkpoint (pytorch_model.bin) there")
        source = str(checkpoint)
        provenance.update(source=source, sha256=_sha256(checkpoint))
    else:
        if _offline():
            raise _unavailable("conch", _CONCH_HUB)
        source = f"hf_hub:{_CONCH_HUB}"
        provenance.update(source=source)
    try:
        model, _ = create_model_from_pretrained(
            "conch_ViT-B-16", source, device=device, hf_auth_token=os.environ.get("HF_TOKEN")
        )
    except (OSError, ValueError, RuntimeError) as exc:
        if source.startswith("hf_hub:"):
            raise EncoderError(f"{_conch_missing()} ({_oneline(exc)})") from None
        raise EncoderError(f"{source}: cannot load CONCH ({_oneline(exc)})") from None
    return ConchEncoder(model, get_tokenizer(), tokenize, provenance=provenance, device=device)
