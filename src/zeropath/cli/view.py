"""``zeropath view PATH``: serve the local web viewer of a slide and its outputs."""

from __future__ import annotations

from pathlib import Path

import click

from zeropath.cli.common import handle_errors, warn

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@click.command("view")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--outputs",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder of a slide given as PATH (default: the slide's folder).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to serve on (0 picks a free one).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; requests must name it (or localhost) as their host.",
)
@click.option("--no-browser", is_flag=True, help="Do not open a web browser.")
@click.option(
    "--annotate",
    is_flag=True,
    help="Label the regions queued by `active run` (PATH: its --out folder or its queue/).",
)
@handle_errors
def view(
    path: Path, outputs: Path | None, port: int, host: str, no_browser: bool, annotate: bool
) -> None:
    """Browse a slide with its tissue classes and nuclei in a local web page.

    PATH is an output folder of `nuclei segment`/`tissue segment` (its slides are found
    through run.json or next to the outputs), one output file, or a slide or image.
    With --annotate, PATH is the --out folder of `active run` (or its queue/ folder) and the
    page paints class masks for the queued regions.
    """
    from zeropath.viewer.app import create_viewer

    if annotate and outputs is not None:
        raise click.UsageError("--outputs does not apply with --annotate")
    mode = "annotate" if annotate else "view"
    server, session = create_viewer(path, outputs=outputs, host=host, port=port, mode=mode)
    for message in session.warnings:
        warn(message)
    if host not in _LOOPBACK:
        warn(
            f"serving on {host}: anyone who can reach this address can see the slides; "
            "browsers must use this address (other host names are refused)"
        )
    if annotate:
        summary = session.queue.summary()
        note = f"annotating: {summary['done']} of {summary['total']} regions done; "
    else:
        note = ""
    # the token in the URL lets the page save; other web pages cannot learn it
    click.echo(f"zeropath viewer at {server.page_url} ({note}Ctrl+C to stop)")
    if not no_browser:
        import webbrowser

        try:
            webbrowser.open(server.page_url)
        except Exception:  # no browser available: the URL is printed above
            pass
    import signal

    # Ctrl+C must stop the server even when the parent started us with SIGINT ignored (a
    # background job of a non-interactive shell, some test runners and cluster launchers)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        session.close()
