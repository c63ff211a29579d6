"""``zeropath points …``: nuclei from one click each (self-refining SAM on MobileSAM)."""

from __future__ import annotations

from pathlib import Path

import click

from zeropath.cli.common import (
    Progress,
    handle_errors,
    model_out_option,
    mpp_option,
    out_option,
    overwrite_option,
    scheduler_option,
    threads_option,
    workers_option,
)


@click.group()
def points() -> None:
    """Point-supervised nucleus segmentation (one click per nucleus)."""


@points.command("fit")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--points",
    "points_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory of point files: STEM.csv (x,y columns) or STEM.geojson per image.",
)
@model_out_option
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Joint self-refining steps (adapters + decoder; one SAM-sized crop each).",
)
@click.option(
    "--decoder-warmup-steps",
    type=click.IntRange(min=0),
    default=400,
    show_default=True,
    help="Steps (one crop each) that train the prompt-free decoder alone on frozen-SAM "
    "embeddings before the joint steps.",
)
@click.option(
    "--decoder-polish-steps",
    type=click.IntRange(min=0),
    default=400,
    show_default=True,
    help="Steps (one crop each) that train the decoder alone on the adapted embeddings "
    "after the joint steps.",
)
@threads_option
@mpp_option
@click.option(
    "--work-mpp",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="µm/px the model works at (default 0.125).",
)
@click.option(
    "--recentre-um",
    type=click.FloatRange(min=0.0),
    default=2.0,
    show_default=True,
    help="Move each click to the centre of its frozen-SAM nucleus mask if that is at most "
    "this far (µm); 0 keeps clicks where they are.",
)
@handle_errors
def fit(
    inputs: tuple[Path, ...],
    points_dir: Path,
    out: Path,
    seed: int,
    steps: int,
    decoder_warmup_steps: int,
    decoder_polish_steps: int,
    threads: int | None,
    mpp: float | None,
    work_mpp: float | None,
    recentre_um: float,
) -> None:
    """Adapt MobileSAM to images with one point per nucleus.

    Use the result with `points segment --model OUT`.
    """
    from zeropath.cli.nuclei import set_threads
    from zeropath.nuclei.modeldir import model_sha256
    from zeropath.points.fit import PointsFitOptions
    from zeropath.points.train import DEFAULT_WORK_MPP, fit_points_files

    set_threads(threads)
    options = PointsFitOptions(
        steps=steps,
        decoder_warmup_steps=decoder_warmup_steps,
        decoder_polish_steps=decoder_polish_steps,
        seed=seed,
        recentre_um=recentre_um,
    )
    command = (
        f"points fit ({len(inputs)} inputs, --steps {steps}, --decoder-warmup-steps "
        f"{decoder_warmup_steps}, --decoder-polish-steps {decoder_polish_steps}, --seed {seed}, "
        f"--recentre-um {recentre_um:g})"
    )
    with Progress("fitting", stage_lines=True) as progress:
        model = fit_points_files(
            list(inputs),
            points_dir,
            out,
            mpp=mpp,
            work_mpp=work_mpp or DEFAULT_WORK_MPP,
            options=options,
            progress=progress,
            command=command,
        )
    prov = model.provenance
    click.echo(
        f"fitted on {prov['n_training_images']} images ({prov['n_points']} points, "
        f"{prov['n_crops']} crops) in {prov['timings']['total_s']:.0f} s "
        f"({prov['timings']['s_per_step']:.2f} s/step); model in {out} "
        f"(sha256 {model_sha256(out)[:12]})"
    )


@points.command("segment")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_option
@click.option(
    "--model",
    "model",
    required=True,
    type=click.Path(path_type=Path),
    help="Model directory written by `points fit`.",
)
@mpp_option
@workers_option
@scheduler_option
@threads_option
@overwrite_option
@handle_errors
def segment(
    inputs: tuple[Path, ...],
    out: str,
    model: Path,
    mpp: float | None,
    workers: int,
    scheduler: str | None,
    threads: int | None,
    overwrite: bool,
) -> None:
    """Segment nuclei with a points model (no prompts needed).

    An alias of `nuclei segment --model MODEL`: writes STEM.labels.tif, STEM.geojson,
    STEM.csv, STEM.overlay.png and STEM.run.json per input and run.json into --out; complete,
    current outputs are skipped (--overwrite).
    """
    from zeropath.cli.nuclei import segment_inputs
    from zeropath.points.model import PointsSegmenter

    path = model.parent if model.name == "model.json" else model
    segment_inputs(
        list(inputs),
        Path(out),
        lambda: PointsSegmenter(path),
        "points segment",
        mpp=mpp,
        device="cpu",
        workers=workers,
        scheduler=scheduler,
        threads=threads,
        tile_um=None,
        overwrite=overwrite,
    )
