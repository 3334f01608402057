"""The `--device` / `--dtype` options of the benchmarks that run on the CPU or a GPU."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    import torch

DeviceOption = Annotated[
    Literal["auto", "cpu", "cuda"],
    typer.Option(help="auto: CUDA when available (the Triton kernel path), else CPU."),
]
DtypeOption = Annotated[
    Literal["auto", "float32", "float16", "bfloat16"],
    typer.Option(help="auto: bfloat16 on CUDA, float32 on CPU (what each serves in)."),
]


def resolve_device(device: str, dtype: str) -> tuple[torch.device, str]:
    """The torch device and dtype name a benchmark runs in; exits 2 when `cuda` is asked
    for and there is none."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        typer.secho("error: --device cuda but no CUDA device is available", fg="red", err=True)
        raise typer.Exit(2)
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    return dev, dtype if dtype != "auto" else ("bfloat16" if dev.type == "cuda" else "float32")


def describe_device(dev: torch.device) -> str:
    """The device as the result JSON names it."""
    import torch

    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    threads = torch.get_num_threads()
    return f"cpu: {platform.machine()}, {os.cpu_count()} cores, {threads} torch threads"
