"""MobileSAM: architecture on a tiny random model; the official checkpoint on rendered nuclei."""

from __future__ import annotations

import numpy as np
import pytest

from zeropath.testing import render_nuclei

torch = pytest.importorskip("torch")

from zeropath.models.mobilesam.predictor import (  # noqa: E402
    SamPredictor,
    _interp_matrix,
    box_nms,
    get_preprocess_shape,
    stability_score,
)
from zeropath.models.mobilesam.sam import (  # noqa: E402
    MobileSAM,
    MobileSAMConfig,
    build_mobilesam,
)
from zeropath.models.mobilesam.transformer import Attention  # noqa: E402

TINY = MobileSAMConfig.tiny()


@pytest.fixture(scope="module")
def tiny() -> MobileSAM:
    torch.manual_seed(0)
    model = build_mobilesam(TINY)
    # make the batch norms non-trivial so the inference-time folding is exercised
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(mod.weight, 0.5, 1.5)
    return model.eval()


def test_tiny_model_forward_shapes(tiny: MobileSAM) -> None:
    x = tiny.preprocess(torch.randint(0, 256, (2, 3, 64, 48)))
    assert x.shape == (2, 3, 64, 64)
    emb = tiny.encode(x)
    assert emb.shape == (2, 32, 4, 4)
    assert torch.isfinite(emb).all()
    coords = torch.rand(5, 2, 2) * 64
    labels = torch.tensor([[1, 0]] * 5)
    boxes = torch.tensor([[4.0, 4.0, 30.0, 40.0]] * 5)
    for multimask, m in ((True, 3), (False, 1)):
        low, iou = tiny.decode(emb[:1], (coords, labels), boxes, None, multimask)
        assert low.shape == (5, m, 16, 16) and iou.shape == (5, m)
    low, _ = tiny.decode(emb[:1], (coords, labels), None, torch.randn(5, 1, 16, 16), True)
    assert torch.isfinite(low).all()
    up = tiny.postprocess_masks(low, (64, 48), (100, 75))
    assert up.shape == (5, 3, 100, 75)


def test_eval_folding_matches_training_path(tiny: MobileSAM) -> None:
    """Batch norm folded at inference == the module sequence (train mode without updates)."""
    x = tiny.preprocess(torch.randint(0, 256, (1, 3, 64, 64)))
    with torch.no_grad():
        ref = tiny.encode(x)
        conv = tiny.image_encoder.patch_embed.seq[0]
        manual = conv.bn(conv.c(x))
        assert torch.allclose(conv(x), manual, atol=1e-5)
    assert ref.shape[1] == TINY.prompt_dim


def test_state_dict_names_follow_the_official_layout(tiny: MobileSAM) -> None:
    keys = set(tiny.state_dict())
    for k in (
        "image_encoder.patch_embed.seq.0.c.weight",
        "image_encoder.layers.0.blocks.0.conv2.bn.running_var",
        "image_encoder.layers.1.blocks.0.attn.attention_biases",
        "image_encoder.layers.2.downsample.conv2.c.weight",
        "image_encoder.neck.3.bias",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.bias",
        "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight",
        "mask_decoder.iou_prediction_head.layers.2.bias",
    ):
        assert k in keys
    assert not any("attention_bias_idxs" in k or "pixel_" in k for k in keys)


def test_folded_attention_equals_plain_attention() -> None:
    torch.manual_seed(1)
    attn = Attention(32, 4, downsample_rate=2).eval()
    few, many = torch.randn(3, 5, 32), torch.randn(3, 40, 32)
    with torch.no_grad():
        ref = attn(few, many, many * 0.5)
        assert torch.allclose(attn.attend_to_many(few, many, many * 0.5), ref, atol=1e-5)
        ref = attn(many, few, few * 2)
        got = attn.attend_from_many(many, few, few * 2, residual=many)
        assert torch.allclose(got, ref + many, atol=1e-5)
        shared = many[:1]  # one image shared by the batch of prompts
        ref = attn(shared.expand(3, -1, -1), few, few)
        assert torch.allclose(attn.attend_from_many(shared, few, few), ref, atol=1e-5)
        expanded = shared.expand(3, -1, -1)
        assert torch.allclose(attn(few, shared, shared), attn(few, expanded, expanded), atol=1e-5)
        ref = attn(expanded, few, few)  # shared queries, per-prompt keys
        assert torch.allclose(attn(shared, few, few), ref, atol=1e-5)


def test_interp_matrices_compose_like_postprocess() -> None:
    low = torch.randn(1, 1, 16, 16)
    model = build_mobilesam(TINY)
    ref = model.postprocess_masks(low, (64, 40), (50, 31))[0, 0]
    my = _interp_matrix(50, 64) @ _interp_matrix(64, 16)[:64]
    mx = _interp_matrix(31, 40) @ _interp_matrix(64, 16)[:40]
    np.testing.assert_allclose(my @ low[0, 0].numpy() @ mx.T, ref.numpy(), atol=1e-5)


def test_helpers() -> None:
    assert get_preprocess_shape(256, 256, 1024) == (1024, 1024)
    assert get_preprocess_shape(300, 400, 1024) == (768, 1024)
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    keep = box_nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5)
    assert keep.tolist() == [1, 2]
    assert len(box_nms(np.zeros((0, 4)), np.zeros(0), 0.5)) == 0
    logits = np.array([[-2.0, -0.5], [0.5, 2.0]])
    assert float(stability_score(logits, 0.0, 1.0)) == pytest.approx(1 / 3)


def test_tiny_predictor_caches_and_outputs(tiny: MobileSAM, tmp_path) -> None:
    rgb, _, centres = render_nuclei((48, 40), n=3, radius=(3, 5), seed=2)
    pred = SamPredictor(tiny, cache_size=1, cache_dir=tmp_path, chunk_size=2)
    assert pred.set_image(rgb) is False
    emb = pred.features.clone()
    assert pred.set_image(rgb) is True and pred.stats["hits"] == 1
    assert len(list(tmp_path.glob("*.npy"))) == 1
    other = rgb.copy()
    other[0, 0] ^= 1
    assert pred.set_image(other) is False  # one pixel changes the key
    fresh = SamPredictor(tiny, cache_dir=tmp_path)
    assert fresh.set_image(rgb) is True and fresh.stats["disk_hits"] == 1
    assert torch.equal(fresh.features, emb)

    xy = centres[:, ::-1]
    masks, iou, low = fresh.predict(xy, multimask=True)
    assert masks.shape == (len(xy), 48, 40) and masks.dtype == bool
    assert iou.shape == (len(xy),) and low.shape == (len(xy), 16, 16)
    _, iou_w, _ = fresh.predict(xy, multimask=True, window_px=24)
    np.testing.assert_allclose(iou_w, iou, atol=1e-5)  # windows do not change the tokens
    # inside each window the windowed masks are the exact masks
    crops = fresh.predict_crops(xy, multimask=True, window_px=24)
    for k, c in enumerate(crops):
        hh, ww = c.mask.shape
        np.testing.assert_array_equal(c.mask, masks[k, c.r0 : c.r0 + hh, c.c0 : c.c0 + ww])
    small, _, _ = fresh.predict(xy, multimask=True, choice="smallest")
    assert small.shape == masks.shape
    with pytest.raises(ValueError):
        fresh.predict(xy, multimask=True, choice="largest")
    labels, scores = fresh.predict_labels(xy, boxes=None, window_px=None)
    assert labels.dtype == np.uint32 and labels.shape == (48, 40)
    assert set(np.unique(labels)) <= set(range(len(xy) + 1)) and scores.shape == (len(xy),)
    auto = fresh.automatic_masks(
        rgb,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_thresh=0.0,
        max_area_frac=1.0,
        min_area_px=1,
    )
    assert auto.dtype == np.uint32 and auto.shape == (48, 40)
    with pytest.raises(ValueError):
        fresh.predict(None, None, None)


def _official_predictor() -> SamPredictor:
    from zeropath.models import cached_path
    from zeropath.models.mobilesam.sam import load_mobilesam

    path = cached_path("mobilesam")
    if path is None:
        pytest.skip("the MobileSAM checkpoint is not in the model cache (zeropath models fetch)")
    return SamPredictor(load_mobilesam(path))


def test_official_checkpoint_segments_rendered_nuclei() -> None:
    """Strict loading + nucleus-centre prompts give the rendered nuclei: the weights are right."""
    pred = _official_predictor()
    rgb, labels, centres = render_nuclei((256, 256), n=20, seed=0)
    assert pred.set_image(rgb) is False
    assert pred.features.shape == (1, 256, 64, 64)
    assert pred.set_image(rgb.copy()) is True and pred.stats == {
        "hits": 1,
        "disk_hits": 0,
        "misses": 1,
    }
    xy = centres[:, ::-1]
    masks, iou, _ = pred.predict(xy, multimask=True, window_px=64)
    ious = []
    for k, m in enumerate(masks):
        truth = labels == k + 1
        ious.append((m & truth).sum() / max((m | truth).sum(), 1))
        rows, cols = np.nonzero(m)
        assert len(rows) > 0
        assert np.hypot(rows.mean() - centres[k, 0], cols.mean() - centres[k, 1]) < 3.0
    assert np.mean(ious) > 0.6, ious
    assert np.mean(iou) > 0.8
