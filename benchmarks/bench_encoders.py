"""Image-tower throughput of the CLIP-family encoders, with randomly initialised weights.

Speed does not depend on the values of the weights, so the real architectures (OpenAI CLIP
ViT-B/16; PLIP and QuiltNet ViT-B/32) are built from their configs with random weights and run
through the same :class:`~zeropath.models.encoders.clip.ClipEncoder` path that the
pretrained models use: uint8 tiles of ``--tile`` px (ZEUS reads 448-px tiles) → CLIP
preprocessing (resize, centre crop, normalise; numpy + PIL on the CPU) → vision tower →
projection → L2 norm. Reported: tiles/s (whole ``encode_images`` call, preprocessing included)
and, from the tissue tile count of a typical slide, slides/h.

    python benchmarks/bench_encoders.py --device cpu --tiles 64
    python benchmarks/bench_encoders.py --device cuda --tiles 2048 --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np


def _archs() -> dict:
    from zeropath.models.encoders.clip import VIT_B_16, VIT_B_32
    from zeropath.testing.tiny_clip import TEST_TINY

    return {
        "openai-clip (ViT-B/16)": VIT_B_16,
        "plip / quiltnet (ViT-B/32)": VIT_B_32,
        "test-tiny": TEST_TINY,
    }


def run(args: argparse.Namespace) -> list[dict]:
    import torch
    from transformers import CLIPModel

    from zeropath.models.encoders.clip import ClipEncoder
    from zeropath.models.encoders.tokenizers import ByteTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (args.tiles, args.tile, args.tile, 3), dtype=np.uint8)
    rows = []
    for label, arch in _archs().items():
        if args.only and not any(o in label for o in args.only):
            continue
        torch.manual_seed(0)
        model = CLIPModel(arch.hf_config())
        tile = args.tile if arch.image_size >= 224 else arch.image_size
        batch = tiles if tile == args.tile else tiles[:, :tile, :tile]
        enc = ClipEncoder(
            model,
            ByteTokenizer(arch.context_length),
            name=label,
            mpp=0.5,
            provenance={"name": label, "weights": "random"},
            device=args.device,
            batch_size=args.batch_size,
        )
        enc.encode_images(batch[: min(len(batch), args.batch_size)])  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        emb = enc.encode_images(batch)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
        assert emb.shape == (len(batch), arch.embed_dim)
        rate = len(batch) / wall
        rows.append(
            {
                "encoder": label,
                "device": args.device,
                "tile_px": int(tile),
                "tiles": len(batch),
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
                "wall_s": round(wall, 2),
                "tiles_per_s": round(rate, 1),
                "slides_per_h": round(3600 * rate / args.tiles_per_slide, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiles", type=int, default=64)
    ap.add_argument("--tile", type=int, default=448, help="tile side read from the slide, px")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--tiles-per-slide",
        type=int,
        default=48000,
        help="tiles of a slide with 1.5 cm² of tissue at 0.5 µm/px, stride 112 px (slides/h)",
    )
    ap.add_argument("--only", nargs="*", default=None, help="substrings of encoder labels")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = run(args)
    info = {"python": sys.version.split()[0], "machine": platform.machine()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
