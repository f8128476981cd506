"""One description of the machine a measurement ran on, for every script.

``python -m spectra.analysis.machine [--cuda]`` prints it as JSON: a script that must not hold
a CUDA context itself (it launches GPU runs) probes the device in a subprocess this way.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import version
from typing import Any

__all__ = ["cpu_model", "describe", "machine_info"]


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``, else ``platform``) and the cores usable here."""
    name = ""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)"


def machine_info(cuda: bool | None = None) -> dict[str, Any]:
    """CPU, OS, Python, torch (threads, CUDA build), lightning and, with ``cuda`` (default: if
    a GPU is available), the GPU's name and memory; ``device`` names the one measured."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "lightning": version("lightning"),
    }
    info["device"] = info["cpu"]
    if cuda:
        info["device"] = torch.cuda.get_device_name(0)
        info["device_memory_gib"] = round(
            torch.cuda.get_device_properties(0).total_memory / 2**30, 1
        )
    return info


def describe(info: dict[str, Any]) -> str:
    """One line: device, host CPU, versions and threads."""
    device = info["device"]
    if info.get("device_memory_gib"):
        device += f" ({info['device_memory_gib']} GiB)"
    host = "" if info["device"] == info["cpu"] else f"; host CPU {info['cpu']}"
    cuda = f" (CUDA {info['cuda']})" if info.get("cuda") else ""
    return (
        f"{device}{host}; torch {info['torch']}{cuda}, {info['torch_threads']} thread(s); "
        f"lightning {info['lightning']}; Python {info['python']}; {info['os']}"
    )


if __name__ == "__main__":
    print(json.dumps(machine_info(cuda="--cuda" in sys.argv[1:])))
