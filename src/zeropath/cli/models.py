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
@handle_errors
def list_command(as_json: bool) -> None:
    """Show each model's task, licence, size, checksum and whether it is cached, then the
    vision-language encoders with their licence, gating and commercial-use terms."""
    from zeropath.models import cache, registry
    from zeropath.models.encoders import list_encoders

    specs = registry.list_specs()
    encoders = list_encoders()
    if as_json:
        rows = []
        for spec in specs:
            row = spec.to_dict()
            row["cached"] = registry.is_cached(spec)
            row["path"] = str(registry.cache_location(spec))
            rows.append(row)
        enc_rows = [
            {
                "name": info.name,
                "licence": info.licence,
                "gated": info.gated,
                "commercial_use": info.commercial_use,
                "hub_id": info.hub_id,
                "revision": info.revision,
                "mpp": info.mpp,
                "input_size": info.input_size,
                "extra": info.extra,
                "description": info.description,
            }
            for info in encoders
        ]
        payload = {"cache": str(cache.models_dir()), "models": rows, "encoders": enc_rows}
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
            "yes" if spec.gated else "no",
            "?" if spec.size is None else f"{spec.size / 1e6:.1f}",
            "yes" if registry.is_cached(spec) else "no",
            spec.sha256[:12],
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
            "yes" if info.gated else "no",
            "yes" if info.commercial_use else "no",
            "?" if info.mpp is None else f"{info.mpp:g}",
            "?" if info.input_size is None else str(info.input_size),
            _hub_source(info.hub_id, info.revision),
        )
    console = Console()
    if not console.is_terminal:  # pipes and tests: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)
    console.print(enc_table)


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
