"""The machine a benchmark ran on, recorded in every results JSON."""

from __future__ import annotations

import os
import sys

# benchmarks/selectors.py shadows the standard library's `selectors` (which platform,
# importlib.metadata and asyncio import) when this folder is first on sys.path, as it is
# for `python benchmarks/<name>.py`: load the real one first, for every benchmark.
if "selectors" not in sys.modules:
    _here = os.path.dirname(os.path.abspath(__file__))
    _path = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    try:
        import selectors  # noqa: F401  (the standard library's)
    finally:
        sys.path[:] = _path

import platform  # noqa: E402
from importlib.metadata import PackageNotFoundError, version


def machine(packages: tuple[str, ...]) -> dict:
    """CPU, memory, Python, torch threads / GPU when torch is loaded, package versions."""
    import sys

    def ver(p):
        try:
            return version(p)
        except PackageNotFoundError:
            return None

    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                    if ln.startswith("model name")), platform.processor())
    except OSError:
        cpu = platform.processor()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem, 1),
            "python": platform.python_version(), "platform": platform.platform()}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info["packages"] = {p: ver(p) for p in packages}
    return info
