"""``zeropath doctor``: what this installation can do, in one screen."""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

import click

_PACKAGES = (
    "numpy",
    "scipy",
    "skimage",
    "tifffile",
    "imagecodecs",
    "openslide",
    "tiffslide",
    "shapely",
    "dask",
    "distributed",
    "torch",
    "transformers",
    "zarr",
)


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    return str(getattr(mod, "__version__", "installed"))


def _slide_backends() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        import openslide

        lib = getattr(openslide, "__library_version__", "?")
        out["openslide"] = f"ok (library {lib})"
    except Exception as exc:
        out["openslide"] = f"unavailable: {exc}"
    try:
        import tiffslide

        out["tiffslide"] = f"ok ({tiffslide.__version__})"
    except Exception as exc:
        out["tiffslide"] = f"unavailable: {exc}"
    return out


def _shared_data() -> str | None:
    env = os.environ.get("ZEROPATH_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [
        Path.cwd().parent / "shared" / "data",
        Path.cwd() / "shared" / "data",
    ]:
        if cand.is_dir():
            return str(cand.resolve())
    return None


def collect() -> dict[str, Any]:
    """Everything ``doctor`` reports, as a dict (also for ``--json``)."""
    from zeropath import __version__
    from zeropath.models import is_cached, list_specs, models_dir

    info: dict[str, Any] = {
        "zeropath": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {m: _version(m) for m in _PACKAGES},
        "slide_backends": _slide_backends(),
    }
    try:
        import torch

        info["torch"] = {
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        }
    except Exception as exc:
        info["torch"] = {"error": str(exc)}
    info["model_cache"] = str(models_dir())
    info["models"] = {
        s.name: ("cached" if is_cached(s.name) else "not cached") for s in list_specs()
    }
    info["shared_data"] = _shared_data()
    return info


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Versions, slide backends, torch threads, model cache and test data visibility."""
    info = collect()
    if as_json:
        import json

        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"zeropath {info['zeropath']}")
    click.echo(f"python   {info['python']}")
    click.echo(f"platform {info['platform']}  cpus={info['cpus']}")
    click.echo("packages:")
    for name, ver in info["packages"].items():
        click.echo(f"  {name:<12} {ver or 'not installed'}")
    click.echo("slide backends:")
    for name, state in info["slide_backends"].items():
        click.echo(f"  {name:<12} {state}")
    t = info["torch"]
    if "error" in t:
        click.echo(f"torch    unavailable: {t['error']}")
    else:
        click.echo(f"torch    {t['version']}  threads={t['threads']}  cuda={t['cuda']}")
    click.echo(f"model cache {info['model_cache']}")
    for name, state in info["models"].items():
        click.echo(f"  {name:<32} {state}")
    shared = info["shared_data"]
    click.echo(f"shared data {shared if shared else 'not visible (../shared/data)'}")
