"""spectra.analysis.machine: the one machine description every script uses."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from spectra.analysis.machine import describe, machine_info


def test_machine_info_and_its_line() -> None:
    info = machine_info(cuda=False)
    assert info["torch"] == torch.__version__ and info["device"] == info["cpu"]
    assert "cores)" in info["cpu"] and info["torch_threads"] == torch.get_num_threads()
    line = describe(info)
    assert line.startswith(info["cpu"]) and f"torch {torch.__version__}" in line
    gpu = {**info, "device": "NVIDIA H100", "device_memory_gib": 79.1, "cuda": "12.8"}
    assert describe(gpu).startswith(f"NVIDIA H100 (79.1 GiB); host CPU {info['cpu']}; ")
    assert "(CUDA 12.8)" in describe(gpu)


def test_module_prints_json_for_a_subprocess_probe() -> None:
    out = subprocess.run([sys.executable, "-m", "spectra.analysis.machine"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out)["cpu"] == machine_info(cuda=False)["cpu"]
