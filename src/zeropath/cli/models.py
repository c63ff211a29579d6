"""``zeropath models``: list the registered models and download them into the cache."""

from __future__ import annotations

import json

import click

from zeropath.cli.common import Progress, handle_errors


@click.group("models")
def models() -> None:
    """List the pretrained models zeropath knows and download them into the cache."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also show the test-only encoders (synthetic, test-tiny) of zeropath.testing.",
)
@handle_errors
def list_command(as_json: bool, show_all: bool) -> None:
    """Show each model file's task, licence, size, checksum and whether it is cached; the
    vision-language encoders with their licence, gating and commercial-use terms; and the
    nucleus segmenters, detectors and feature extractors."""
    from zeropath.models import cache, registry

    specs = [s for s in registry.list_specs() if show_all or not s.test_only]
    encoders = registry.list_encoders(test_only=show_all)
    others = [
        s
        for s in registry.rows(test_only=show_all)
        if s.kind in ("segmenter", "segmenter-format", "detector", "features")
    ]
    if as_json:
        rows = []
        for spec in specs:
            row = spec.to_dict()
            row["cached"] = registry.is_cached(spec)
            row["path"] = str(registry.cache_location(spec))
            rows.append(row)
        payload = {
            "cache": str(cache.models_dir()),
            "models": rows,
            "encoders": [s.to_dict() for s in encoders],
            "components": [s.to_dict() for s in others],
        }
        click.echo(json.dumps(payload, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models (cache: {cache.models_dir()})", title_justify="left")
    for column, justify in [
        ("name", "left"),
        ("task", "left"),
        ("licence", "left"),
        ("gated", "left"),
        ("size MB", "right"),
        ("cached", "left"),
        ("sha256", "left"),
    ]:
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for spec in specs:
        table.add_row(
            spec.name,
            spec.task,
            spec.licence,
            _yes(spec.gated),
            "?" if spec.size is None else f"{spec.size / 1e6:.1f}",
            _yes(registry.is_cached(spec)),
            str(spec.sha256)[:12],
        )
    enc_table = Table(
        title="vision-language encoders (--encoder NAME or a local directory)", title_justify="left"
    )
    for column in ("name", "licence", "gated", "commercial use", "µm/px", "input", "source"):
        enc_table.add_column(column, no_wrap=column != "licence")
    for info in encoders:
        enc_table.add_row(
            info.name,
            info.licence,
            _yes(info.gated),
            _yes(info.commercial_use),
            _mpp(info.mpp),
            "?" if info.input_size is None else str(info.input_size),
            _hub_source(info.hub_id, info.revision),
        )
    other_table = Table(
        title="nucleus segmenters (--model), model directory formats, detectors, features",
        title_justify="left",
    )
    for column in ("name", "kind", "licence", "µm/px", "weights", "description"):
        other_table.add_column(column, no_wrap=column != "description")
    for spec in others:
        other_table.add_row(
            spec.name,
            spec.kind,
            spec.licence,
            _mpp(spec.mpp),
            "yes" if spec.has_weights else "-",
            spec.description,
        )
    console = Console()
    if not console.is_terminal:  # pipes and tests: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)
    console.print(enc_table)
    console.print(other_table)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _mpp(mpp: float | None) -> str:
    return "?" if mpp is None else f"{mpp:g}"


def _hub_source(hub_id: str | None, revision: str | None) -> str:
    """``org/name@commit`` when the registry pins a revision, ``org/name`` (main) otherwise."""
    if not hub_id:
        return "builtin"
    return f"{hub_id}@{revision[:12]}" if revision else hub_id


@models.command("fetch")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if a verified copy exists.")
@handle_errors
def fetch_command(name: str, force: bool) -> None:
    """Download model NAME into the cache (checksum verified) and print its path.

    Loading a model hashes it again; a cached copy found damaged is refused until it is
    fetched again (--force downloads it even when the cache looks fine)."""
    from zeropath.models import registry

    spec = registry.get_spec(name)
    with Progress(f"{spec.name}") as progress:
        path = registry.fetch(spec, progress=progress, force=force)
    click.echo(str(path))
