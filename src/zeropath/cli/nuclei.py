"""``zeropath nuclei …``: nucleus instance segmentation of images and whole slides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from zeropath.cli.common import (
    Progress,
    device_option,
    expand_inputs,
    handle_errors,
    model_out_option,
    mpp_option,
    out_option,
    overwrite_option,
    run_segmentation,
    scheduler_option,
    threads_option,
    workers_option,
)
from zeropath.errors import ConfigError
from zeropath.models.registry import DEFAULT_SEGMENTER, get_segmenter

#: Without ``--model`` the bundled label-free ZA-Net model runs; an installation without it
#: falls back to ``classical`` (see :func:`zeropath.models.registry.get_segmenter`).
DEFAULT_MODEL = DEFAULT_SEGMENTER


def load_segmenter(name: str | None):
    """Resolve ``--model`` (a registered segmenter name or a model directory) to a segmenter."""
    return get_segmenter(name)


@click.group()
def nuclei() -> None:
    """Nucleus instance segmentation."""


#: core size of a tile when neither ``--tile-um`` nor the model's tile spec gives one
DEFAULT_TILE_UM = 256.0


@nuclei.command("segment")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@out_option
@click.option(
    "--model",
    "model",
    default=None,
    help=f"Model name or directory (`nuclei fit` or `points fit`; default: {DEFAULT_MODEL}).",
)
@mpp_option
@device_option("a learned model (ZA-Net, InstanSeg)")
@workers_option
@scheduler_option
@threads_option
@click.option(
    "--sample", is_flag=True, help="Add the bundled sample slide (CMU-1-Small-Region.svs)."
)
@click.option(
    "--tile-um",
    type=click.FloatRange(min=16.0),
    default=None,
    help=f"Tile core size in µm (default: the model's, else {DEFAULT_TILE_UM:g}).",
)
@click.option(
    "--overlap",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Context read around each tile core on every side, in µm (default: the model's halo).",
)
@overwrite_option
@handle_errors
def segment(
    inputs: tuple[Path, ...],
    out: str,
    model: str | None,
    mpp: float | None,
    device: str,
    workers: int,
    scheduler: str | None,
    threads: int | None,
    sample: bool,
    tile_um: float | None,
    overlap: float | None,
    overwrite: bool,
) -> None:
    """Segment nuclei in images, slides or directories of them.

    Writes STEM.labels.tif, STEM.geojson, STEM.csv, STEM.overlay.png and the provenance
    record STEM.run.json per input, and run.json (all inputs' records) into --out. Inputs
    whose outputs are complete and made with the same model and options are skipped
    (--overwrite recomputes them). A missing INPUT is reported and the others go on.
    """
    from zeropath.io.reader import bundled_sample

    paths = list(inputs)
    if sample:
        paths.append(bundled_sample())
    if not paths:
        raise click.UsageError("give at least one INPUT (or --sample)")
    segment_inputs(
        paths,
        Path(out),
        lambda: load_segmenter(model),
        "nuclei segment",
        mpp=mpp,
        device=device,
        workers=workers,
        scheduler=scheduler,
        threads=threads,
        tile_um=tile_um,
        overlap_um=overlap,
        overwrite=overwrite,
    )


def set_threads(threads: int | None) -> None:
    """Torch's CPU thread count, set once per command here (library code leaves it alone)."""
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))


def segment_inputs(
    paths: list[Path],
    out_dir: Path,
    load: Callable[[], Any],
    command: str,
    *,
    mpp: float | None,
    device: str,
    workers: int,
    scheduler: str | None,
    threads: int | None,
    tile_um: float | None,
    overwrite: bool,
    overlap_um: float | None = None,
) -> None:
    """The body of ``nuclei segment`` (and of its alias ``points segment``): check the device,
    set torch's threads once, load the segmenter (``load()``, only when an input exists), move
    it to the device and run the batch with the model's tile size unless ``tile_um`` is given.
    """
    from zeropath.models.device import resolve_device

    device = resolve_device(device)
    files, missing = expand_inputs(paths)
    set_threads(threads)
    segmenter = load() if files else None
    if segmenter is not None and device != "cpu":
        if not hasattr(segmenter, "to"):
            raise ConfigError(f"--device {device}: the {segmenter.name} model runs on the CPU only")
        segmenter.to(device)
    if tile_um is None:
        spec = getattr(segmenter, "tile", None)
        tile_um = getattr(spec, "tile_um", None) or DEFAULT_TILE_UM
    parameters: dict[str, Any] = {"command": command, "device": device}
    if threads is not None:
        parameters["threads"] = threads
    run_segmentation(
        files,
        out_dir,
        segmenter,
        parameters,
        mpp=mpp,
        tile_um=tile_um,
        overlap_um=overlap_um,
        workers=workers,
        scheduler=scheduler,
        overwrite=overwrite,
        input_failures=missing,
    )


@nuclei.command("fit")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_out_option
@mpp_option
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Precision-learning rounds of the detector (each: train, then keep confident peaks).",
)
@click.option(
    "--refine-epochs",
    type=click.FloatRange(min=0.0, min_open=True),
    default=6.0,
    show_default=True,
    help="Detector training per precision-learning round, in passes over the images' area "
    "in random crops (the first round trains longer).",
)
@click.option(
    "--iterations",
    type=click.IntRange(min=10),
    default=600,
    show_default=True,
    help="Optimiser steps (one batch of crops each) of the segmentation network.",
)
@click.option(
    "--self-train-rounds",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Self-training rounds of the segmentation network on its own confident output.",
)
@click.option(
    "--self-train-iterations",
    type=click.IntRange(min=1),
    default=150,
    show_default=True,
    help="Optimiser steps of each self-training round.",
)
@threads_option
@click.option(
    "--detector",
    type=click.Choice(["stain", "text"]),
    default="stain",
    show_default=True,
    help="Coarse detector: hematoxylin stain prior (offline) or a text-prompted OWLv2/OWL-ViT.",
)
@click.option(
    "--detector-model",
    default=None,
    help="Hub id or local folder of the text-prompted detector (default OWLv2 base).",
)
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    help="Text prompt of the text-prompted detector (repeatable).",
)
@handle_errors
def fit(
    inputs: tuple[Path, ...],
    out: Path,
    seed: int,
    mpp: float | None,
    rounds: int,
    refine_epochs: float,
    iterations: int,
    self_train_rounds: int,
    self_train_iterations: int,
    threads: int | None,
    detector: str,
    detector_model: str | None,
    prompts: tuple[str, ...],
) -> None:
    """Learn a nucleus segmenter from unlabelled images or slides (zero annotations).

    Reads pixels only, never labels. Use the result with `nuclei segment --model OUT`.
    """
    from zeropath.nuclei.fit import ZANetFitOptions, fit_zanet
    from zeropath.nuclei.modeldir import model_sha256

    set_threads(threads)
    options = ZANetFitOptions(
        seed=seed,
        refine_rounds=rounds,
        refine_epochs=refine_epochs,
        segnet_iterations=iterations,
        self_train_rounds=self_train_rounds,
        self_train_iterations=self_train_iterations,
        detector=detector,
        detector_model=detector_model,
        prompts=tuple(prompts),
    )
    with Progress("fitting", stage_lines=True) as progress:
        model = fit_zanet(list(inputs), out, mpp=mpp, options=options, progress=progress)
    prov = model.provenance
    click.echo(
        f"fitted on {prov['n_training_images']} images ({prov['n_points']} nucleus centres) "
        f"in {prov['timings']['total_s']:.0f} s; model in {out} (sha256 {model_sha256(out)[:12]})"
    )
