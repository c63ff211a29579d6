"""Where learned models run: ``cpu``, ``cuda`` or ``mps``, checked against this torch build.

One rule for every command: asking for a device that torch here does not have is a
:class:`~zeropath.errors.ConfigError` (one ``error:`` line, exit 2), never a silent fall-back
to the CPU. Models move their networks with ``.to(device)`` and inputs follow the network's
parameters (:func:`module_device`).
"""

from __future__ import annotations

from typing import Any

from zeropath.errors import ConfigError

__all__ = ["DEVICES", "module_device", "resolve_device"]

#: The devices the ``--device`` options accept.
DEVICES = ("cpu", "cuda", "mps")


def resolve_device(name: str) -> str:
    """``name`` if torch can run on it here, else :class:`ConfigError` saying why."""
    name = str(name).strip().lower()
    if name not in DEVICES:
        raise ConfigError(f"--device {name}: not one of {', '.join(DEVICES)}")
    if name == "cpu":
        return name
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no visible GPU"
        raise ConfigError(
            f"--device cuda: torch {torch.__version__} here has {build}; use --device cpu "
            "or install a CUDA build of torch on a machine with an NVIDIA GPU"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: Apple's Metal backend is not available here")
    return name


def module_device(module: Any) -> Any:
    """The device of a torch module's first parameter (CPU for a module without any)."""
    import torch

    for p in module.parameters():
        return p.device
    return torch.device("cpu")
