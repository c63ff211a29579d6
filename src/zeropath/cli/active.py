"""``zeropath active …``: active learning for tissue segmentation (AcZeroTS-style)."""

from __future__ import annotations

from pathlib import Path

import click

from zeropath.active import STRATEGIES
from zeropath.cli.common import Progress, device_option, handle_errors, out_option


@click.group()
def active() -> None:
    """Label few regions, chosen by the model: active learning for tissue segmentation."""


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise click.BadParameter("three comma-separated numbers: uncertainty,diversity,coverage")
    try:
        u, d, c = (float(p) for p in parts)
    except ValueError:
        raise click.BadParameter("three comma-separated numbers") from None
    return {"uncertainty": u, "diversity": d, "coverage": c}


@active.command("run")
@click.option(
    "--pool",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder of pool images (png/tif/jpg) to select regions from.",
)
@out_option
@click.option(
    "--budget",
    required=True,
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    help="Fraction of the pool's pixels that may be labelled (e.g. 0.1).",
)
@click.option(
    "--oracle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of label masks by stem (class indices or 0/255); without it regions are "
    "queued in OUT/queue for annotation and the run resumes when their masks exist.",
)
@click.option(
    "--test",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Test images scored after every round (labels from --oracle or --test-labels).",
)
@click.option(
    "--test-labels",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Label masks of the --test images (default: the --oracle folder).",
)
@click.option(
    "--strategy",
    type=click.Choice(list(STRATEGIES)),
    default="combined",
    show_default=True,
    help="Selection rule.",
)
@click.option(
    "--features",
    default=None,
    help="Cell features: histology (default), encoder:NAME or encoder:mobilesam.",
)
@click.option(
    "--encoder",
    default=None,
    help="Use this encoder's features (same as --features encoder:NAME).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--region-px",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Side of the square candidate regions, px (a multiple of --cell-px).",
)
@click.option(
    "--cell-px",
    type=click.IntRange(min=2),
    default=16,
    show_default=True,
    help="Feature cell side, px.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=None,
    help="Regions labelled per round (default: about ten rounds to the budget).",
)
@click.option(
    "--seed-size",
    type=click.IntRange(min=1),
    default=None,
    help="Regions in the seed round (default: --batch).",
)
@click.option(
    "--seed-set",
    type=click.Choice(["random", "coreset"]),
    default="random",
    show_default=True,
    help="How the seed round is chosen.",
)
@click.option(
    "--weights",
    default=None,
    help="Weights of the combined rule: uncertainty,diversity,coverage (default 0.5,0,0.5).",
)
@click.option(
    "--classes",
    default=None,
    help="Comma-separated class names, index order (default: from the prompts or labels).",
)
@click.option(
    "--prompts",
    "prompts_arg",
    default=None,
    help="Prompt YAML (or a shipped set's name): text prototypes for classes without labels "
    "(needs encoder features).",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Feature cache folder (default: $ZEROPATH_HOME/active-features).",
)
@click.option(
    "--max-rounds", type=click.IntRange(min=1), default=None, help="Stop after this many rounds."
)
@device_option("an encoder")
@handle_errors
def run(
    pool: Path,
    out: str,
    budget: float,
    oracle: Path | None,
    test: Path | None,
    test_labels: Path | None,
    strategy: str,
    features: str | None,
    encoder: str | None,
    seed: int,
    region_px: int,
    cell_px: int,
    batch: int | None,
    seed_size: int | None,
    seed_set: str,
    weights: str | None,
    classes: str | None,
    prompts_arg: str | None,
    cache_dir: Path | None,
    max_rounds: int | None,
    device: str,
) -> None:
    """Select regions to label until --budget of the pool's pixels is labelled.

    Writes OUT/curve.csv (strategy,seed,round,labelled_fraction,dice,iou), OUT/curve.png,
    OUT/state/ (to resume) and OUT/queue/ (regions waiting for an annotator), and run.json.
    Rerun the same command to resume an interrupted run or to import annotations.
    """
    from zeropath.active.features import get_extractor
    from zeropath.active.loop import ActiveConfig, run_active
    from zeropath.errors import ConfigError
    from zeropath.models.cache import home

    if features and encoder and features != f"encoder:{encoder}":
        raise ConfigError("give --features or --encoder, not both")
    spec = features or (f"encoder:{encoder}" if encoder else "histology")
    class_names: tuple[str, ...] | None = None
    if classes:
        class_names = tuple(c.strip() for c in classes.split(",") if c.strip())
    text_prompts = None
    if prompts_arg:
        from zeropath.tissue.prompts import load_prompts

        prompt_set = load_prompts(prompts_arg)
        text_prompts = {c.index: c.texts(prompt_set.templates) for c in prompt_set.classes}
        if class_names is None:
            class_names = tuple(row["name"] for row in prompt_set.table())
    config = ActiveConfig(
        strategy=strategy,
        seed=seed,
        budget=budget,
        region_px=region_px,
        cell_px=cell_px,
        batch=batch,
        seed_size=seed_size,
        seed_set=seed_set,
        weights=_weights(weights),
        class_names=class_names,
        max_rounds=max_rounds,
    )
    from zeropath.models.device import resolve_device

    device = resolve_device(device)
    extractor = get_extractor(spec, cell=cell_px, device=device)
    out_dir = Path(out)
    with Progress("active learning") as bar:

        def progress(done: int, total: int | None, message: str = "") -> None:
            if message.startswith("round"):
                click.echo(message, err=True)
            else:
                bar(done, total, message)

        result = run_active(
            pool,
            out_dir,
            config,
            oracle=oracle,
            test=test,
            test_labels=test_labels,
            extractor=extractor,
            cache_dir=cache_dir or home() / "active-features",
            text_prompts=text_prompts,
            progress=progress,
        )
    if result.status == "waiting":
        click.echo(
            f"{len(result.queued)} regions queued in {out_dir / 'queue'}: save each region's mask "
            "as queue/ID.mask.png (or QuPath GeoJSON as queue/ID.geojson or queue/STEM.geojson) "
            "and rerun the same command to continue"
        )
        return
    last = result.rows[-1] if result.rows else None
    if last is not None and last.get("dice") is not None:
        click.echo(
            f"{strategy} seed {seed}: {100 * result.labelled_fraction:.2f} % labelled in "
            f"{len(result.rows)} rounds, dice {last['dice']:.4f}, iou {last['iou']:.4f}"
        )
    else:
        click.echo(
            f"{strategy} seed {seed}: {100 * result.labelled_fraction:.2f} % labelled in "
            f"{len(result.rows)} rounds"
        )
    click.echo(f"outputs in {out_dir}")
