"""The encoder registry and the deterministic ``synthetic`` encoder (numpy only, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from zeropath.models.encoders import (
    EncoderError,
    get_encoder,
    get_encoder_info,
    l2_normalise,
    list_encoders,
)
from zeropath.testing.synthetic import DEFAULT_CLASSES, SyntheticEncoder

# ------------------------------------------------------------------------------------ registry


def test_registry_lists_every_encoder_with_terms():
    infos = {info.name: info for info in list_encoders()}
    assert {"synthetic", "test-tiny", "openai-clip", "plip", "quiltnet", "conch"} <= set(infos)
    assert [i.name for i in list_encoders()] == sorted(infos)
    conch = infos["conch"]
    assert conch.gated and not conch.commercial_use and conch.licence == "CC-BY-NC-ND-4.0"
    assert conch.input_size == 448 and conch.mpp == 0.5
    assert infos["openai-clip"].hub_id == "openai/clip-vit-base-patch16"
    assert infos["openai-clip"].licence == "MIT" and infos["openai-clip"].input_size == 224
    assert infos["plip"].hub_id == "vinid/plip" and not infos["plip"].commercial_use
    assert infos["quiltnet"].hub_id == "wisdomik/QuiltNet-B-32"
    assert infos["synthetic"].licence == "Apache-2.0" and not infos["synthetic"].gated
    assert infos["test-tiny"].input_size == 64


def test_unknown_encoder_names_the_known_ones():
    with pytest.raises(EncoderError, match=r"unknown encoder 'nope'.*synthetic"):
        get_encoder_info("nope")
    with pytest.raises(EncoderError, match="unknown encoder"):
        get_encoder("nope")


def test_l2_normalise_keeps_zero_rows():
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_models_list_shows_encoders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from zeropath.cli.models import models

    monkeypatch.setenv("ZEROPATH_HOME", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(models, ["list"])
    assert result.exit_code == 0, result.output
    conch = next(line for line in result.stdout.splitlines() if "│ conch" in line)
    cells = [c.strip() for c in conch.split("│")]
    assert cells[1:5] == ["conch", "CC-BY-NC-ND-4.0", "yes", "no"]
    assert "synthetic" not in result.stdout and "test-tiny" not in result.stdout
    rows = json.loads(runner.invoke(models, ["list", "--json"]).stdout)["encoders"]
    assert {r["name"] for r in rows} == {"openai-clip", "plip", "quiltnet", "conch"}
    rows = json.loads(runner.invoke(models, ["list", "--json", "--all"]).stdout)["encoders"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["synthetic"]["commercial_use"] is True and by_name["synthetic"]["test_only"]
    assert by_name["plip"]["hub_id"] == "vinid/plip" and not by_name["plip"]["test_only"]
    shown = runner.invoke(models, ["list", "--all"]).stdout
    assert any("│ synthetic" in line for line in shown.splitlines())
    assert any("│ test-tiny" in line for line in shown.splitlines())


# ------------------------------------------------------------------------------- synthetic


@pytest.fixture
def enc() -> SyntheticEncoder:
    return SyntheticEncoder()


def test_defaults_and_registry_factory():
    e = get_encoder("synthetic")
    assert isinstance(e, SyntheticEncoder)
    assert (e.input_size, e.mpp, e.embed_dim) == (224, 1.0, 16)
    assert e.class_names == list(DEFAULT_CLASSES)
    assert {"tumor", "stroma", "background"} <= set(e.class_names)
    assert e.provenance["name"] == "synthetic" and e.provenance["source"] == "builtin"
    assert e.provenance["licence"] == "Apache-2.0"


def test_class_vectors_are_orthonormal(enc: SyntheticEncoder):
    v = enc.encode_texts(enc.class_names)
    np.testing.assert_allclose(v @ v.T, np.eye(len(enc.class_names)), atol=1e-7)
    np.testing.assert_array_equal(v, enc.class_vectors)


def test_text_matching_case_longest_alias(enc: SyntheticEncoder):
    assert enc.class_of("An H&E image of TUMOR cells") == "tumor"
    assert enc.class_of("lymphocytes infiltrating") == "lymphocyte"
    assert enc.class_of("tumour") == "tumor"  # default alias
    assert enc.class_of("adipose tissue") == "fat"
    assert enc.class_of("an unrelated sentence") is None
    custom = SyntheticEncoder({"tumor": (1, 2, 3), "tumor bed": (9, 9, 9)}, embed_dim=4)
    assert custom.class_of("the Tumor Bed region") == "tumor bed"  # longest wins
    assert custom.class_of("tumour") is None  # no default aliases with custom classes
    # equal length: the last occurrence (the head noun) wins
    pair = SyntheticEncoder({"aaa": (0, 0, 0), "bbb": (255, 255, 255)}, embed_dim=3)
    assert pair.class_of("bbb then aaa") == "aaa"
    assert enc.class_of("cancer-associated stroma") == "stroma"
    assert enc.class_of("tumor infiltrating lymphocytes") == "lymphocyte"
    assert enc.class_of("colorectal adenocarcinoma epithelium") == "tumor"


def test_unmatched_texts_are_orthogonal_unit_and_deterministic(enc: SyntheticEncoder):
    texts = ["keratin pearls", "an empty prompt", "Keratin   PEARLS"]
    v = enc.encode_texts(texts)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(v @ enc.class_vectors.T, 0.0, atol=1e-7)
    np.testing.assert_array_equal(v[0], v[2])  # case and whitespace are normalised
    assert abs(float(v[0] @ v[1])) < 0.999
    np.testing.assert_array_equal(v, SyntheticEncoder().encode_texts(texts))  # fresh instance
    assert enc.encode_texts([]).shape == (0, 16)
    with pytest.raises(TypeError):
        enc.encode_texts("tumor")


def test_class_colour_tile_has_highest_cosine_with_its_class(enc: SyntheticEncoder):
    tiles = np.stack([enc.tile(name, 96) for name in enc.class_names])
    img = enc.encode_images(tiles)
    assert img.shape == (len(enc.class_names), 16) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-6)
    sims = img @ enc.encode_texts([f"a patch of {n}" for n in enc.class_names]).T
    np.testing.assert_array_equal(sims.argmax(axis=1), np.arange(len(enc.class_names)))


def test_cosine_equals_normalised_softmax_weight(enc: SyntheticEncoder):
    colour = np.array([200.0, 120.0, 170.0])
    tile = np.broadcast_to(colour.astype(np.uint8), (40, 40, 3))
    w = enc.weights(colour)
    assert w.shape == (len(enc.class_names),) and np.isclose(w.sum(), 1.0)
    expected = w / np.linalg.norm(w)
    np.testing.assert_allclose(
        enc.encode_images(tile)[0] @ enc.class_vectors.T, expected, atol=1e-6
    )


def _mix(enc: SyntheticEncoder, major: str, minor: str) -> np.ndarray:
    tile = enc.tile(minor, 100)
    tile[:70] = enc.tile(major, 100)[:70]
    return tile


@pytest.mark.parametrize(("major", "minor"), [("tumor", "stroma"), ("stroma", "tumor")])
def test_seventy_thirty_mix_is_closest_to_the_majority(enc: SyntheticEncoder, major, minor):
    emb = enc.encode_images(_mix(enc, major, minor)[None])[0]
    sims = emb @ enc.encode_texts(enc.class_names).T
    assert enc.class_names[int(sims.argmax())] == major


def test_seventy_thirty_majority_beats_minority_for_every_pair(enc: SyntheticEncoder):
    names = enc.class_names
    texts = enc.encode_texts(names)
    for major in names:
        for minor in names:
            if major != minor:
                sims = enc.encode_images(_mix(enc, major, minor)[None])[0] @ texts.T
                assert sims[names.index(major)] > sims[names.index(minor)], (major, minor)
    two = SyntheticEncoder({"a": (200, 60, 90), "b": (245, 245, 245)}, embed_dim=3)
    for major, minor in (("a", "b"), ("b", "a")):
        sims = two.encode_images(_mix(two, major, minor)) @ two.encode_texts(["a", "b"]).T
        assert ["a", "b"][int(sims.argmax())] == major


def test_non_square_tiles_use_the_centre_square(enc: SyntheticEncoder):
    tile = np.empty((100, 300, 3), np.uint8)
    tile[:] = DEFAULT_CLASSES["stroma"]
    tile[:, 100:200] = DEFAULT_CLASSES["tumor"]  # the centre 100×100 square
    emb = enc.encode_images(tile)
    np.testing.assert_allclose(emb, enc.encode_images(enc.tile("tumor", 100)), atol=1e-7)


def test_patches_grid_and_layout(enc: SyntheticEncoder):
    tile = enc.tile("stroma", 224)
    tile[:, :112] = DEFAULT_CLASSES["tumor"]  # left half tumour
    patches = enc.encode_patches(np.stack([tile, enc.tile("background", 224)]))
    assert patches.shape == (2, 14, 14, 16) and patches.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(patches, axis=-1), 1.0, atol=1e-6)
    labels = (patches @ enc.class_vectors.T).argmax(axis=-1)
    tumor, stroma = enc.class_names.index("tumor"), enc.class_names.index("stroma")
    assert (labels[0, :, :7] == tumor).all() and (labels[0, :, 7:] == stroma).all()
    assert (labels[1] == enc.class_names.index("background")).all()
    # the tile embedding is the rule applied to the mean of the patch colours
    colours = enc.patch_colours(tile[None])
    np.testing.assert_allclose(colours.mean(axis=(1, 2)), tile.reshape(-1, 3).mean(0)[None])


def test_patches_of_resized_tiles_are_area_averages():
    e = SyntheticEncoder(input_size=32)  # 2×2 grid
    tile = np.zeros((48, 48, 3), np.uint8)
    tile[:24, :24] = 240  # top-left quadrant, exactly one grid cell after resizing
    colours = e.patch_colours(tile)
    np.testing.assert_allclose(colours[0, :, :, 0], [[240, 0], [0, 0]])
    odd = np.zeros((45, 45, 3), np.uint8)
    odd[:, :15] = 90  # a third of the width: cell 0 covers 22.5 px, 15 of them at 90
    np.testing.assert_allclose(e.patch_colours(odd)[0, 0, :, 0], [60.0, 0.0])


def test_determinism_and_batch_independence(enc: SyntheticEncoder):
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (20, 50, 60, 3), dtype=np.uint8)
    a = enc.encode_images(tiles)
    np.testing.assert_array_equal(a, enc.encode_images(tiles))
    np.testing.assert_allclose(a[7], enc.encode_images(tiles[7])[0], atol=1e-7)
    np.testing.assert_array_equal(enc.encode_patches(tiles[:3]), enc.encode_patches(tiles[:3]))
    with pytest.raises(ValueError, match="RGB"):
        enc.encode_images(np.zeros((2, 8, 8), np.uint8))


def test_save_and_load_directory(tmp_path: Path):
    e = SyntheticEncoder({"gland": (200, 100, 150), "lumen": (250, 250, 250)}, embed_dim=5, mpp=0.5)
    e.save(tmp_path)
    loaded = get_encoder(str(tmp_path))
    assert isinstance(loaded, SyntheticEncoder)
    assert loaded.class_names == ["gland", "lumen"] and loaded.mpp == 0.5
    assert loaded.provenance["config_sha256"] == e.provenance["config_sha256"]
    np.testing.assert_array_equal(
        loaded.encode_texts(["gland", "x"]), e.encode_texts(["gland", "x"])
    )


def test_invalid_configurations():
    with pytest.raises(EncoderError, match="embed_dim"):
        SyntheticEncoder({"a": (0, 0, 0), "b": (1, 1, 1)}, embed_dim=2)
    with pytest.raises(EncoderError, match="alias"):
        SyntheticEncoder({"a": (0, 0, 0)}, embed_dim=2, aliases={"x": "b"})
    with pytest.raises(EncoderError, match="differ"):
        SyntheticEncoder({"A": (0, 0, 0), "a": (1, 1, 1)}, embed_dim=3)
    with pytest.raises(EncoderError, match="unknown keys"):
        SyntheticEncoder.from_config({"kind": "synthetic", "clases": {}})
