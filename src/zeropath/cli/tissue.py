"""``zeropath tissue …``: zero-shot tissue segmentation of slides from text prompts (ZEUS)."""

from __future__ import annotations

from pathlib import Path

import click

from zeropath.cli.common import (
    BatchLog,
    Progress,
    device_option,
    expand_inputs,
    fail,
    handle_errors,
    mpp_option,
    out_option,
    scheduler_option,
    threads_option,
    warn,
    workers_option,
)

#: ``--encoder`` default: CONCH, the vision-language model ZEUS was built on. Its weights are
#: gated; without them the loader's one-line error says how to get them (or use another name).
DEFAULT_ENCODER = "conch"


@click.group()
def tissue() -> None:
    """Zero-shot tissue segmentation from text prompts (ZEUS)."""


@tissue.command("segment")
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--prompts",
    "prompts_arg",
    required=True,
    help="Prompt YAML file, or a shipped set by name (see `zeropath tissue prompts`).",
)
@out_option
@click.option(
    "--encoder",
    default=DEFAULT_ENCODER,
    show_default=True,
    help="Vision-language encoder: a registered name (`zeropath models list`) or a directory.",
)
@mpp_option
@workers_option
@scheduler_option
@click.option(
    "--tile",
    type=click.IntRange(min=16),
    default=None,
    help="Tile side in px at the encoder's µm/px (default: the encoder's input size).",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=None,
    help="Tile step in px (default: tile/4); also the score-grid cell. Must divide --tile.",
)
@click.option(
    "--tile-mpp",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="µm/px the tiles are read at (default: the encoder's).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Tiles per encoder call.",
)
@click.option(
    "--sigma",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Gaussian smoothing of the score maps, in cells (0: none).",
)
@click.option(
    "--out-mpp",
    type=click.FloatRange(min=0.0, min_open=True),
    default=2.0,
    show_default=True,
    help="µm/px of STEM.tissue.tif (snapped to an integer downsample of level 0).",
)
@click.option(
    "--tissue-mask",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Detect tissue first (auto: for slides, not for plain images).",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Embedding cache folder (default: $ZEROPATH_HOME/embeddings, the user cache).",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write cached tile embeddings.")
@device_option("the encoder")
@threads_option
@click.option(
    "--overwrite", is_flag=True, help="Recompute slides whose outputs are already complete."
)
@handle_errors
def segment(
    slides: tuple[Path, ...],
    prompts_arg: str,
    out: str,
    encoder: str,
    mpp: float | None,
    workers: int,
    scheduler: str | None,
    tile: int | None,
    stride: int | None,
    tile_mpp: float | None,
    batch_size: int,
    sigma: float,
    out_mpp: float,
    tissue_mask: str,
    cache_dir: Path | None,
    no_cache: bool,
    device: str,
    threads: int | None,
    overwrite: bool,
) -> None:
    """Label the tissue of slides (or images) with the classes of a prompt file.

    Writes STEM.tissue.tif, STEM.tissue.geojson, STEM.tissue.overlay.png, STEM.scores.zarr per
    slide and run.json into --out. Slides whose outputs are complete and current are skipped.
    """
    import time

    from zeropath.io.writers import write_run_json
    from zeropath.models.encoders import get_encoder
    from zeropath.run.batch import run_many
    from zeropath.tissue.cache import default_cache_dir
    from zeropath.tissue.grid import resolve_tiling
    from zeropath.tissue.prompts import class_embeddings, load_prompts
    from zeropath.tissue.zeus import EncoderRef, TissueOptions, TissueTask, run_record

    files, missing = expand_inputs(list(slides))
    if not files:  # nothing to run: one error line per missing INPUT
        for f in missing[:-1]:
            click.echo(f"error: {f.message}", err=True)
        fail(missing[-1].message)
    prompts = load_prompts(prompts_arg)
    if threads:
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    from zeropath.models.device import resolve_device

    device = resolve_device(device)
    model = get_encoder(encoder, device=device)
    resolve_tiling(tile, stride, int(model.input_size))  # a bad --tile/--stride fails here, once
    text = class_embeddings(model, prompts)
    text_s = time.perf_counter() - t0
    ref = EncoderRef.of(model, spec=encoder, device=device)
    ref.threads = threads
    cache = None if no_cache else str(cache_dir or default_cache_dir())
    options = TissueOptions(
        tile=tile,
        stride=stride,
        work_mpp=tile_mpp,
        batch_size=batch_size,
        sigma=sigma,
        out_mpp=out_mpp,
        tissue_only={"auto": None, "on": True, "off": False}[tissue_mask],
        cache_dir=cache,
        threads=threads,
    )
    task = TissueTask(ref, text, prompts, options, mpp=mpp, skip_complete=not overwrite)
    out_dir = Path(out)
    for f in missing:  # missing INPUTs: reported now, the others go on
        click.echo(f"error: {f.message}", err=True)
    log = BatchLog(len(files), lambda r: f"{r.n_regions} regions, tissue {r.tissue_fraction:.0%}")
    with Progress("tissue") as progress:
        report = run_many(
            files,
            out_dir,
            task,
            workers=workers,
            scheduler=scheduler,
            progress=progress,
            on_done=log,
        )
    report.failures[:0] = missing  # recorded in run.json; exit 2 at the end
    defaulted = [r.stem for r in report.results if r.mpp_origin == "default"]
    if defaulted:
        from zeropath.io.reader import DEFAULT_MPP

        more = f" and {len(defaulted) - 3} more" if len(defaulted) > 3 else ""
        warn(
            f"no µm/px in {', '.join(defaulted[:3])}{more}: assumed {DEFAULT_MPP} µm/px (40x); "
            "pass --mpp to override (recorded in run.json)"
        )
    params = {
        "command": "tissue segment",
        "inputs": [str(p) for p in files],
        "prompts": prompts_arg,
        "mpp_override": mpp,
        "workers": workers,
        "scheduler": scheduler,
        "device": device,
        "overwrite": overwrite,
        **options.__dict__,
    }
    record = run_record(report.results, report.failures, report.wall_s, ref, prompts, params)
    record["timings"]["text_s"] = round(text_s, 3)
    write_run_json(out_dir / "run.json", record)
    for r in report.results:
        if r.skipped:
            click.echo(f"{r.stem}: outputs complete, skipped (--overwrite recomputes)")
            continue
        top = sorted(
            ((v, k) for k, v in r.class_fractions.items() if v > 0 and k != "background"),
            reverse=True,
        )[:3]
        mix = ", ".join(f"{k} {v:.0%}" for v, k in top) or "no tissue"
        click.echo(
            f"{r.stem}: {r.n_tiles} tiles ({r.n_cached} cached), {r.n_regions} regions; "
            f"tissue {r.tissue_fraction:.0%}: {mix} ({r.timings.get('total_s', 0):.1f} s)"
        )
    if report.failures:  # each was printed as it happened
        raise SystemExit(2)
    click.echo(f"outputs in {out_dir}")


@tissue.command("prompts")
@handle_errors
def prompts_command() -> None:
    """List the shipped prompt sets (usable as `--prompts NAME`)."""
    from zeropath.tissue.prompts import library_names, load_prompts

    for name in library_names():
        p = load_prompts(name)
        click.echo(f"{name}: {', '.join(c.name for c in p.classes)}")


@tissue.command("describe")
@click.argument("prompts_arg", metavar="PROMPTS")
@click.option(
    "--url", required=True, help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1."
)
@click.option("--model", "model_name", required=True, help="Chat model name at that endpoint.")
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Prompt YAML to write (the input plus the descriptions).",
)
@click.option("--n", "count", type=click.IntRange(min=1, max=50), default=5, show_default=True)
@click.option(
    "--api-key-env",
    default="OPENAI_API_KEY",
    show_default=True,
    help="Environment variable holding the API key.",
)
@click.option(
    "--cache",
    "cache_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML cache of answers (model → class → descriptions), reused across runs.",
)
@handle_errors
def describe_command(
    prompts_arg: str,
    url: str,
    model_name: str,
    out_file: Path,
    count: int,
    api_key_env: str,
    cache_file: Path | None,
) -> None:
    """Add LLM-written visual descriptions of each class to a prompt file."""
    import yaml

    from zeropath.io.writers import atomic_write
    from zeropath.tissue.describe import generate_descriptions, with_descriptions
    from zeropath.tissue.prompts import load_prompts

    prompts = load_prompts(prompts_arg)
    classes = {c.name: list(c.names) for c in prompts.classes}
    found = generate_descriptions(classes, url, model_name, api_key_env, count, cache_file)
    richer = with_descriptions(prompts, found)
    with atomic_write(out_file) as tmp:
        tmp.write_text(
            yaml.safe_dump(richer.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    click.echo(f"wrote {out_file} ({sum(len(v) for v in found.values())} descriptions)")
