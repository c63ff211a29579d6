"""Run a Python module in this process and record its own peak RSS (``VmHWM``) at exit.

Usage: ``python benchmarks/peak_rss.py OUT.txt -m MODULE ARGS...``

Why not ``wait4``'s ``ru_maxrss``? On Linux a child's ``ru_maxrss`` starts from its parent's
resident size at ``fork``: a benchmark that holds a large array when it launches the command
reports that array as the command's peak. ``VmHWM`` belongs to the address space made by
``exec``, so it measures the command alone. The value (kB) is written to ``OUT.txt`` when the
interpreter exits, including on ``SystemExit``.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def vm_hwm_kb() -> int:
    """This process's resident-set high-water mark in kB (0 where ``/proc`` has none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wrap(cmd: list[str], out: Path) -> list[str]:
    """``[python, -m, MODULE, ...]`` → the same command run under this wrapper."""
    if len(cmd) < 3 or cmd[1] != "-m":
        raise ValueError("only `python -m MODULE ...` commands can be wrapped")
    return [cmd[0], str(Path(__file__).resolve()), str(out), *cmd[1:]]


def read_mb(out: Path) -> float | None:
    """The peak recorded by a wrapped run, in MB (``None`` if the run left none)."""
    try:
        return int(out.read_text().strip()) / 1024.0
    except (OSError, ValueError):
        return None


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit(__doc__)
    out, module, args = Path(sys.argv[1]), sys.argv[3], sys.argv[4:]
    atexit.register(lambda: out.write_text(f"{vm_hwm_kb()}\n"))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
