"""CLIP-family encoders: preprocessing, test-tiny, the open_clip converter, real architectures
(built on the meta device, no weights), local directories, and the one-line offline errors."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
F = torch.nn.functional

from zeropath.models import registry  # noqa: E402
from zeropath.models.encoders import EncoderError, get_encoder, get_encoder_info, hub, openclip  # noqa: E402  # noqa: E402
from zeropath.models.encoders.clip import (  # noqa: E402
    QUILTNET_B_32,
    VIT_B_16,
    VIT_B_32,
    ClipArch,
    ClipEncoder,
)
from zeropath.models.encoders.conch import ConchEncoder  # noqa: E402
from zeropath.models.encoders.hf import env_var  # noqa: E402
from zeropath.models.encoders.local import load_directory  # noqa: E402
from zeropath.models.encoders.preprocess import (  # noqa: E402
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    clip_preprocess,
)
from zeropath.models.encoders.tokenizers import ByteTokenizer  # noqa: E402
from zeropath.models.spec import ModelSpec  # noqa: E402
from zeropath.testing.tiny_clip import TEST_TINY, build_test_tiny, save_test_tiny  # noqa: E402


@pytest.fixture(autouse=True)
def _no_encoder_env(monkeypatch: pytest.MonkeyPatch):
    import os

    for var in list(os.environ):
        if var.startswith("ZEROPATH_ENCODER_"):
            monkeypatch.delenv(var)


@pytest.fixture(scope="module")
def tiny() -> ClipEncoder:
    return get_encoder("test-tiny")


# ------------------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize(
    "shape", [(224, 224), (300, 250), (250, 301), (97, 130), (448, 448), (225, 224), (512, 97)]
)
def test_preprocess_matches_clip_image_processor(shape):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ref = CLIPImageProcessorPil()(images=[img], return_tensors="np")["pixel_values"]
    ours = clip_preprocess(img[None], 224)
    assert ours.shape == ref.shape == (1, 3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_preprocess_other_size_and_stats():
    img = np.full((2, 100, 100, 3), 255, np.uint8)
    out = clip_preprocess(img, 64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert out.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


# ---------------------------------------------------------------------------------- test-tiny


def test_tiny_shapes_norms_metadata(tiny: ClipEncoder):
    assert isinstance(tiny, ClipEncoder)
    assert (tiny.input_size, tiny.mpp, tiny.embed_dim, tiny.patch_size) == (64, 1.0, 16, 16)
    assert tiny.provenance == {
        "name": "test-tiny",
        "licence": "Apache-2.0",
        "source": "builtin",
        "revision": "seed-0",
        "seed": 0,
    }
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 80, 70, 3), dtype=np.uint8)
    emb, patches = tiny.encode_images(imgs), tiny.encode_patches(imgs)
    texts = tiny.encode_texts(["tumor", "stroma", "", "x" * 200])
    assert emb.shape == (5, 16) and patches.shape == (5, 4, 4, 16) and texts.shape == (4, 16)
    for arr in (emb, patches, texts):
        assert arr.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(arr, axis=-1), 1.0, atol=1e-5)
    assert tiny.encode_images(imgs[:0]).shape == (0, 16)
    assert tiny.encode_texts([]).shape == (0, 16)
    assert math.isfinite(tiny.logit_scale) and tiny.logit_scale > 0


def test_tiny_is_deterministic_and_batch_independent(tiny: ClipEncoder):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    again = get_encoder("test-tiny")  # a fresh build from the same seed
    np.testing.assert_array_equal(tiny.encode_images(imgs), again.encode_images(imgs))
    np.testing.assert_array_equal(tiny.encode_texts(["a", "b"]), again.encode_texts(["a", "b"]))
    small = get_encoder("test-tiny")
    small.batch_size = 2
    np.testing.assert_allclose(small.encode_images(imgs), tiny.encode_images(imgs), atol=1e-5)
    np.testing.assert_allclose(small.encode_patches(imgs), tiny.encode_patches(imgs), atol=1e-5)
    np.testing.assert_allclose(
        tiny.encode_images(imgs[3]), tiny.encode_images(imgs)[3:4], atol=1e-5
    )
    # padding next to a longer text does not change a text's embedding (mask + EOS pooling)
    alone = tiny.encode_texts(["short"])
    padded = tiny.encode_texts(["short", "a considerably longer description of stroma"])[:1]
    np.testing.assert_allclose(alone, padded, atol=1e-5)
    assert not np.allclose(tiny.encode_texts(["tumor"]), tiny.encode_texts(["stroma"]))
    # the global random state is left alone by building the model
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_test_tiny()
    assert torch.equal(torch.rand(3), expected)


def test_tiny_patches_follow_the_projection(tiny: ClipEncoder):
    """Patch embeddings are the vision tower's patch tokens → post_layernorm → projection."""
    img = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    pixels = torch.from_numpy(clip_preprocess(img, 64))
    with torch.inference_mode():
        hidden = tiny.model.vision_model(pixel_values=pixels).last_hidden_state
        ref = tiny.model.visual_projection(tiny.model.vision_model.post_layernorm(hidden[:, 1:]))
        pooled = tiny.model.visual_projection(tiny.model.vision_model.post_layernorm(hidden[:, 0]))
    ref = F.normalize(ref, dim=-1).reshape(1, 4, 4, 16).numpy()
    np.testing.assert_allclose(tiny.encode_patches(img), ref, atol=1e-5)
    np.testing.assert_allclose(
        tiny.encode_images(img), F.normalize(pooled, dim=-1).numpy(), atol=1e-5
    )


def test_byte_tokenizer():
    ids, mask = ByteTokenizer(8)(["Ab", "a" * 20])
    assert ids.shape == (2, 8) and ids.dtype == np.int64
    assert ids[0, :4].tolist() == [256, ord("a"), ord("b"), 257] and (ids[0, 4:] == 257).all()
    assert mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0] and mask[1].all()
    assert ids[1, -1] == 257  # truncated, EOS kept


def test_saved_tiny_directory_round_trip(tmp_path: Path, tiny: ClipEncoder):
    save_test_tiny(tmp_path)
    loaded = get_encoder(str(tmp_path))
    assert isinstance(loaded, ClipEncoder) and loaded.name == "test-tiny"
    sha = hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    assert loaded.provenance["sha256"] == sha and loaded.provenance["source"] == str(tmp_path)
    imgs = np.random.default_rng(4).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.encode_images(imgs), tiny.encode_images(imgs), atol=1e-6)
    np.testing.assert_allclose(
        loaded.encode_texts(["gland"]), tiny.encode_texts(["gland"]), atol=1e-6
    )


def test_env_var_points_a_registered_name_at_a_directory(tmp_path, monkeypatch):
    save_test_tiny(tmp_path)
    monkeypatch.setenv("ZEROPATH_ENCODER_PLIP", str(tmp_path))
    enc = get_encoder("plip")
    assert enc.name == "plip" and enc.provenance["source"] == str(tmp_path)
    assert enc.provenance["licence"] == get_encoder_info("plip").licence
    assert env_var("openai-clip") == "ZEROPATH_ENCODER_OPENAI_CLIP"


def test_load_directory_rejects_unknown_layouts(tmp_path: Path):
    with pytest.raises(EncoderError, match="no encoder recognised"):
        load_directory(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(EncoderError, match="model_type 'bert'"):
        load_directory(tmp_path)
    with pytest.raises(EncoderError, match="not a directory"):
        load_directory(tmp_path / "missing")


# ------------------------------------------------------------------------ real architectures


@pytest.mark.parametrize(
    ("arch", "params", "act"),
    [
        (VIT_B_16, 149_620_737, "quick_gelu"),  # openai/clip-vit-base-patch16
        (VIT_B_32, 151_277_313, "quick_gelu"),  # vinid/plip (and openai ViT-B/32)
        (QUILTNET_B_32, 151_277_313, "gelu"),  # wisdomik/QuiltNet-B-32
    ],
)
def test_real_architectures(arch: ClipArch, params: int, act: str):
    from transformers import CLIPModel

    config = arch.hf_config()
    with torch.device("meta"):
        model = CLIPModel(config)
    assert sum(p.numel() for p in model.parameters()) == params
    v, t = config.vision_config, config.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads) == (768, 12, 12)
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads) == (512, 12, 8)
    assert (t.max_position_embeddings, t.vocab_size, config.projection_dim) == (77, 49408, 512)
    assert v.image_size == 224 and v.hidden_act == t.hidden_act == act
    grid = 224 // arch.patch_size
    assert model.vision_model.embeddings.position_embedding.weight.shape == (grid * grid + 1, 768)


# ---------------------------------------------------------------------- open_clip conversion


def make_openclip_state_dict(arch: ClipArch, seed: int = 0, device: str = "cpu") -> dict:
    """A random state dict with open_clip's ViT CLIP key names and shapes for ``arch``."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.05):
        if device == "meta":
            return torch.empty(shape, device="meta")
        return torch.randn(*shape, generator=gen) * scale

    def ln(prefix, width, sd):
        sd[f"{prefix}.weight"] = 1 + rnd(width, scale=0.1)
        sd[f"{prefix}.bias"] = rnd(width, scale=0.1)

    def blocks(prefix, width, layers, sd):
        hidden = int(width * arch.mlp_ratio)
        for i in range(layers):
            p = f"{prefix}.{i}"
            ln(f"{p}.ln_1", width, sd)
            ln(f"{p}.ln_2", width, sd)
            sd[f"{p}.attn.in_proj_weight"] = rnd(3 * width, width, scale=width**-0.5)
            sd[f"{p}.attn.in_proj_bias"] = rnd(3 * width)
            sd[f"{p}.attn.out_proj.weight"] = rnd(width, width, scale=width**-0.5)
            sd[f"{p}.attn.out_proj.bias"] = rnd(width)
            sd[f"{p}.mlp.c_fc.weight"] = rnd(hidden, width, scale=width**-0.5)
            sd[f"{p}.mlp.c_fc.bias"] = rnd(hidden)
            sd[f"{p}.mlp.c_proj.weight"] = rnd(width, hidden, scale=hidden**-0.5)
            sd[f"{p}.mlp.c_proj.bias"] = rnd(width)

    vw, tw = arch.vision_width, arch.text_width
    grid = arch.image_size // arch.patch_size
    sd: dict = {
        "positional_embedding": rnd(arch.context_length, tw, scale=0.01),
        "text_projection": rnd(tw, arch.embed_dim, scale=tw**-0.5),
        "logit_scale": torch.tensor(math.log(1 / 0.07)) if device != "meta" else rnd(),
        "token_embedding.weight": rnd(arch.vocab_size, tw, scale=0.02),
        "visual.class_embedding": rnd(vw),
        "visual.positional_embedding": rnd(grid * grid + 1, vw, scale=0.01),
        "visual.proj": rnd(vw, arch.embed_dim, scale=vw**-0.5),
        "visual.conv1.weight": rnd(vw, 3, arch.patch_size, arch.patch_size, scale=0.02),
    }
    ln("ln_final", tw, sd)
    ln("visual.ln_pre", vw, sd)
    ln("visual.ln_post", vw, sd)
    blocks("transformer.resblocks", tw, arch.text_layers, sd)
    blocks("visual.transformer.resblocks", vw, arch.vision_layers, sd)
    return sd


def _ref_block(x, sd, p, heads, act, mask=None):
    n, length, width = x.shape
    h = F.layer_norm(x, (width,), sd[f"{p}.ln_1.weight"], sd[f"{p}.ln_1.bias"], eps=1e-5)
    q, k, v = F.linear(h, sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"]).chunk(3, -1)
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    if mask is not None:
        scores = scores + mask
    attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, width)
    x = x + F.linear(attn, sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"])
    h = F.layer_norm(x, (width,), sd[f"{p}.ln_2.weight"], sd[f"{p}.ln_2.bias"], eps=1e-5)
    h = act(F.linear(h, sd[f"{p}.mlp.c_fc.weight"], sd[f"{p}.mlp.c_fc.bias"]))
    return x + F.linear(h, sd[f"{p}.mlp.c_proj.weight"], sd[f"{p}.mlp.c_proj.bias"])


def openclip_reference(sd: dict, arch: ClipArch, pixels, ids):
    """open_clip's CLIP forward written from its key layout: (image, text) projected features."""
    act = (lambda t: t * torch.sigmoid(1.702 * t)) if arch.quick_gelu else F.gelu
    vw, tw = arch.vision_width, arch.text_width
    x = (
        F.conv2d(pixels, sd["visual.conv1.weight"], stride=arch.patch_size)
        .flatten(2)
        .transpose(1, 2)
    )
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, vw)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (vw,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], eps=1e-5)
    for i in range(arch.vision_layers):
        x = _ref_block(x, sd, f"visual.transformer.resblocks.{i}", arch.vision_heads, act)
    x = F.layer_norm(x, (vw,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], eps=1e-5)
    image = x[:, 0] @ sd["visual.proj"]
    patches = x[:, 1:] @ sd["visual.proj"]

    length = ids.shape[1]
    t = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:length]
    mask = torch.full((length, length), float("-inf")).triu(1)
    for i in range(arch.text_layers):
        t = _ref_block(t, sd, f"transformer.resblocks.{i}", arch.text_heads, act, mask)
    t = F.layer_norm(t, (tw,), sd["ln_final.weight"], sd["ln_final.bias"], eps=1e-5)
    text = t[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"]
    return image, patches, text


#: A small open_clip-shaped arch with a 514-token CLIP-style vocabulary (see write_bpe_vocab).
_SMALL = {"embed_dim": 24, "vision_width": 64, "vision_heads": 1, "context_length": 20}
_SMALL |= {"vocab_size": 514, "quick_gelu": False, "bos_token_id": 512, "eos_token_id": 513}
SMALL = replace(TEST_TINY, **_SMALL)


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_converter_matches_reference_forward(quick_gelu: bool):
    arch = replace(SMALL, quick_gelu=quick_gelu)
    sd = make_openclip_state_dict(arch, seed=3)
    config = {
        "model_cfg": {
            "quick_gelu": quick_gelu,
            "vision_cfg": {"head_width": 64},
            "text_cfg": {"heads": 2},
        }
    }
    assert openclip.openclip_arch(sd, config) == arch
    model = openclip.openclip_to_hf_model(sd, config)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[512, 5, 9, 77, 513, 0, 0], [512, 300, 513, 0, 0, 0, 0]])
    ref_img, ref_patch, ref_txt = openclip_reference(sd, arch, pixels, ids)
    with torch.inference_mode():
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state
        post = model.vision_model.post_layernorm(hidden)
        img = model.visual_projection(post[:, 0])
        patch = model.visual_projection(post[:, 1:])
        txt = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    torch.testing.assert_close(img, ref_img, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(patch, ref_patch, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(txt, ref_txt, atol=1e-4, rtol=1e-4)
    assert torch.isclose(model.logit_scale, sd["logit_scale"])


def test_converter_handles_wrapped_checkpoints_and_rejects_foreign_keys():
    sd = make_openclip_state_dict(SMALL)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    converted = openclip.openclip_to_hf_state_dict(wrapped)
    assert converted.keys() == openclip.openclip_to_hf_state_dict(sd).keys()
    sd["attn_mask"] = torch.zeros(1)  # buffers are ignored
    openclip.openclip_to_hf_state_dict(sd)
    sd["visual.attn_pool.query"] = torch.zeros(1)
    with pytest.raises(EncoderError, match="does not know"):
        openclip.openclip_to_hf_state_dict(sd)


def test_converter_real_quiltnet_layout_has_no_missing_or_unexpected_keys():
    """The full QuiltNet-B-32 key layout (meta tensors) loads strictly into CLIPModel."""
    from transformers import CLIPModel

    sd = make_openclip_state_dict(QUILTNET_B_32, device="meta")
    arch = openclip.openclip_arch(sd, {"model_cfg": {"embed_dim": 512}})
    assert arch == QUILTNET_B_32
    with torch.device("meta"):
        model = CLIPModel(arch.hf_config())
    converted = openclip.openclip_to_hf_state_dict(sd)
    result = model.load_state_dict(converted, strict=False, assign=True)
    assert not result.unexpected_keys
    assert [k for k in result.missing_keys if not k.endswith("position_ids")] == []


def _bytes_to_unicode() -> list[str]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_bpe_vocab(directory: Path) -> None:
    """A valid CLIP BPE tokenizer with no merges: 512 byte tokens + start/end (514 ids)."""
    chars = _bytes_to_unicode()
    vocab = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"}
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        **special,
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def test_open_clip_directory_loads_like_quiltnet(tmp_path: Path, monkeypatch):
    sd = make_openclip_state_dict(SMALL, seed=7)
    torch.save(sd, tmp_path / "open_clip_pytorch_model.bin")
    config = {
        "model_cfg": {
            "embed_dim": 24,
            "vision_cfg": {"image_size": 64, "patch_size": 16},
            "text_cfg": {"heads": 2, "context_length": 20},
        },
        "preprocess_cfg": {"mean": list(OPENAI_CLIP_MEAN), "std": list(OPENAI_CLIP_STD)},
    }
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    write_bpe_vocab(tmp_path)
    monkeypatch.setenv("ZEROPATH_ENCODER_QUILTNET", str(tmp_path))
    enc = get_encoder("quiltnet")
    assert isinstance(enc, ClipEncoder) and enc.name == "quiltnet" and enc.mpp == 0.5
    sha = hashlib.sha256((tmp_path / "open_clip_pytorch_model.bin").read_bytes()).hexdigest()
    assert enc.provenance["sha256"] == sha and enc.provenance["format"] == "open_clip"

    imgs = np.random.default_rng(5).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    pixels = torch.from_numpy(clip_preprocess(imgs, 64))
    ids, _ = enc.tokenizer(["tumor"])
    ref_img, ref_patch, ref_txt = openclip_reference(sd, SMALL, pixels, torch.from_numpy(ids))
    np.testing.assert_allclose(enc.encode_images(imgs), F.normalize(ref_img, dim=-1), atol=1e-5)
    np.testing.assert_allclose(
        enc.encode_patches(imgs), F.normalize(ref_patch, dim=-1).reshape(2, 4, 4, 24), atol=1e-5
    )
    np.testing.assert_allclose(enc.encode_texts(["tumor"]), F.normalize(ref_txt, dim=-1), atol=1e-5)
    assert ids[0, 0] == 512 and ids[0, -1] == 513


# --------------------------------------------------------------------------- offline errors


def _cached(hub_id: str) -> bool:
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}").exists()


@pytest.mark.parametrize("name", ["openai-clip", "plip", "quiltnet"])
def test_offline_hub_models_fail_with_one_line(name: str, monkeypatch):
    info = get_encoder_info(name)
    if _cached(info.hub_id):
        pytest.skip(f"{info.hub_id} is in the local hub cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError) as err:
        get_encoder(name)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"encoder {name!r} is not available offline: download it on a machine")
    assert f"hf download {info.hub_id} --local-dir DIR" in msg
    assert f"pass --encoder DIR, or set {env_var(name)}=DIR" in msg


def test_offline_bogus_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = ModelSpec(
        "bogus", "encoder", licence="MIT", factory="zeropath.models.encoders.hub:hub_clip",
        hub_id="zeropath-tests/no-such-model", mpp=0.5,
    )  # fmt: skip
    with pytest.raises(EncoderError, match="'bogus' is not available offline") as err:
        hub.hub_clip(spec, None, "cpu")
    assert "ZEROPATH_ENCODER_BOGUS=DIR" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------- CONCH


def test_conch_metadata():
    info = get_encoder_info("conch")
    assert info.gated and not info.commercial_use and info.licence == "CC-BY-NC-ND-4.0"
    assert (info.input_size, info.mpp, info.hub_id) == (448, 0.5, "MahmoodLab/conch")


def test_conch_missing_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "conch", None)
    monkeypatch.setitem(sys.modules, "conch.open_clip_custom", None)
    with pytest.raises(EncoderError) as err:
        get_encoder("conch")
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip install git+https://github.com/Mahmoodlab/CONCH" in msg
    assert "accept the licence" in msg and "HF_TOKEN" in msg and "local checkpoint" in msg


class _FakeConch(torch.nn.Module):
    """Stands in for CONCH's CoCa: records the pixel batch, returns simple embeddings."""

    def __init__(self):
        super().__init__()
        self.visual = types.SimpleNamespace(image_size=(448, 448))
        self.embed_dim = 4
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(50.0)))
        self.seen: list[tuple[int, ...]] = []

    def encode_image(self, x, proj_contrast=True, normalize=True):
        self.seen.append(tuple(x.shape))
        return torch.stack(
            [x.mean((1, 2, 3)), x[:, 0].mean((1, 2)), torch.ones(len(x)), x.std((1, 2, 3))], 1
        )

    def encode_text(self, tokens):
        return torch.nn.functional.one_hot(tokens[:, 0] % 4, 4).float()


def test_conch_wrapper_with_a_fake_package(tmp_path: Path, monkeypatch):
    fake = _FakeConch()
    calls = {}

    def create_model_from_pretrained(cfg, checkpoint, device="cpu", hf_auth_token=None):
        calls.update(cfg=cfg, checkpoint=checkpoint)
        return fake, None

    module = types.ModuleType("conch.open_clip_custom")
    module.create_model_from_pretrained = create_model_from_pretrained
    module.get_tokenizer = lambda: "tok"
    module.tokenize = lambda tokenizer, texts: torch.tensor([[len(t), 0] for t in texts])
    monkeypatch.setitem(sys.modules, "conch", types.ModuleType("conch"))
    monkeypatch.setitem(sys.modules, "conch.open_clip_custom", module)
    (tmp_path / "pytorch_model.bin").write_bytes(b"weights")
    monkeypatch.setenv("ZEROPATH_ENCODER_CONCH", str(tmp_path))

    enc = get_encoder("conch")
    assert isinstance(enc, ConchEncoder)
    assert calls == {"cfg": "conch_ViT-B-16", "checkpoint": str(tmp_path / "pytorch_model.bin")}
    assert enc.provenance["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert (enc.input_size, enc.embed_dim, enc.mpp) == (448, 4, 0.5)
    assert abs(enc.logit_scale - 50.0) < 1e-3
    emb = enc.encode_images(np.zeros((3, 500, 460, 3), np.uint8))
    assert fake.seen == [(3, 3, 448, 448)] and emb.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(enc.encode_texts(["ab", "abc"]), [[0, 0, 1, 0], [0, 0, 0, 1]])
    assert enc.encode_patches(np.zeros((1, 448, 448, 3), np.uint8)) is None
    # a directory with the CONCH hub layout is recognised by load_directory too
    (tmp_path / "meta.yaml").write_text("model: conch\n")
    assert isinstance(load_directory(tmp_path), ConchEncoder)


def test_encoders_pickle_for_worker_processes(tiny: ClipEncoder):
    import pickle

    from zeropath.testing.synthetic import SyntheticEncoder

    imgs = np.random.default_rng(6).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    for enc in (tiny, SyntheticEncoder()):
        copy = pickle.loads(pickle.dumps(enc))
        np.testing.assert_allclose(copy.encode_images(imgs), enc.encode_images(imgs), atol=1e-6)
        np.testing.assert_allclose(copy.encode_texts(["tumor"]), enc.encode_texts(["tumor"]))


# ------------------------------------------------------------------ hub revisions and digests

_PINNED = "0123456789abcdef0123456789abcdef01234567"


def _pin(monkeypatch: pytest.MonkeyPatch, name: str, revision: str) -> None:
    """Replace encoder ``name``'s registry row by one pinned to ``revision`` (restored after)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_model(replace(get_encoder_info(name), revision=revision), overwrite=True)


def test_hub_rows_carry_a_revision_passed_to_the_hub_loader(monkeypatch):
    import huggingface_hub
    import transformers

    calls: list[tuple[str, str | None]] = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, revision))
        raise OSError("no network in tests")

    def fake_from_pretrained(repo_id, revision=None, **kwargs):
        calls.append((repo_id, revision))
        raise OSError("no network in tests")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", fake_from_pretrained)
    for name in ("openai-clip", "plip", "quiltnet"):
        info = get_encoder_info(name)
        assert hasattr(info, "revision") and info.revision is None  # the hub's main branch
        _pin(monkeypatch, name, _PINNED)
        calls.clear()
        with pytest.raises(EncoderError, match="not available offline"):
            get_encoder(name)
        assert calls and all(c == (info.hub_id, _PINNED) for c in calls), (name, calls)


def _fake_hub_cache(root: Path, hub_id: str, commit: str, files: dict[str, bytes]) -> dict:
    """The hub cache layout: ``blobs/<sha256>`` linked from ``snapshots/<commit>/<file>``."""
    repo = root / f"models--{hub_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    paths = {}
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.symlink_to(blob)
        paths[name] = link
    return paths


def test_hub_open_clip_records_commit_and_digest_and_refuses_a_damaged_blob(
    tmp_path: Path, monkeypatch
):
    import io

    import huggingface_hub

    info = get_encoder_info("quiltnet")
    buf = io.BytesIO()
    torch.save(make_openclip_state_dict(SMALL, seed=3), buf)
    config = {"model_cfg": {"embed_dim": 24, "text_cfg": {"heads": 2}}}
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    paths = _fake_hub_cache(
        tmp_path,
        info.hub_id,
        commit,
        {
            "open_clip_config.json": json.dumps(config).encode(),
            "open_clip_pytorch_model.bin": buf.getvalue(),
        },
    )
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda repo, filename, **kw: str(paths[filename])
    )
    fake_bpe = lambda name, ctx, d=None: ByteTokenizer(ctx)  # noqa: E731
    monkeypatch.setattr(openclip, "clip_bpe_tokenizer", fake_bpe)
    enc = get_encoder("quiltnet")
    weights = paths["open_clip_pytorch_model.bin"]
    assert enc.provenance["revision"] == commit  # the commit actually loaded
    assert enc.provenance["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()

    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged in place, same size
    blob.write_bytes(bytes(data))
    with pytest.raises(EncoderError) as err:
        get_encoder("quiltnet")
    msg = str(err.value)
    assert "\n" not in msg and "damaged" in msg
    assert f"hf download {info.hub_id} --force-download" in msg
