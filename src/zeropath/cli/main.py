"""The ``zeropath`` command: a thin shell that parses options and calls the layers below.

Only click is imported here; every subcommand imports its heavy dependencies inside its body,
so ``zeropath --help`` stays fast and never imports torch.
"""

from __future__ import annotations

import click

from zeropath import __version__
from zeropath.cli.active import active
from zeropath.cli.doctor import doctor
from zeropath.cli.eval import eval_command
from zeropath.cli.models import models
from zeropath.cli.nuclei import nuclei
from zeropath.cli.points import points
from zeropath.cli.tissue import tissue
from zeropath.cli.view import view


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zeropath")
def cli() -> None:
    """Segment H&E pathology images with no annotations, or with very few."""


cli.add_command(nuclei)
cli.add_command(points)
cli.add_command(tissue)
cli.add_command(active)
cli.add_command(eval_command)
cli.add_command(models)
cli.add_command(doctor)
cli.add_command(view)


def main() -> None:
    cli(prog_name="zeropath")
