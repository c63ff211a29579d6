"""Typed errors raised by every layer below the CLI.

The CLI turns a :class:`ZeropathError` into one line on stderr and exit code 2; nothing
below ``cli/`` prints or exits.
"""

from __future__ import annotations

from os import PathLike


class ZeropathError(Exception):
    """Base class of all expected, user-facing failures."""


class InputError(ZeropathError):
    """An input file or directory is unreadable, empty, too small or otherwise unusable."""

    def __init__(self, path: str | PathLike[str] | None, message: str) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ModelError(ZeropathError):
    """A model is missing, fails its checksum or cannot be loaded."""


class ConfigError(ZeropathError):
    """A configuration or prompt file is invalid."""


class WeightsError(ModelError):
    """A weights file is unreadable, damaged, or does not fit the network it is loaded into."""


class ChecksumError(WeightsError):
    """A model file's SHA-256 differs from the expected one: it is damaged or was replaced."""
