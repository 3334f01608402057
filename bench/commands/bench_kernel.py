"""`tessera bench kernel`: the multi-LoRA op alone, Triton vs torch path vs reference loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tessera.bench.commands.apps import bench_app
from tessera.bench.commands.bench_device import (
    DeviceOption,
    DtypeOption,
    describe_device,
    resolve_device,
)

if TYPE_CHECKING:
    pass

DEFAULT_OUT = Path("bench/results/kernel.json")


@bench_app.command("kernel")
def bench_kernel(
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    reps: Annotated[int, typer.Option(min=1, help="Timed calls per backend and shape.")] = 20,
    threads: Annotated[
        int, typer.Option(min=0, help="torch CPU threads (0: torch's default).")
    ] = 0,
    quick: Annotated[
        bool, typer.Option("--quick", help="Three small shapes only (a smoke run).")
    ] = False,
    out: Annotated[Path, typer.Option(help="Where to write the JSON result.")] = DEFAULT_OUT,
) -> None:
    """Time add_lora per backend across shapes; the last line printed is the JSON result.

    On CPU Triton is not timed (the interpreter measures Python, not the kernel; its
    correctness is tested under TRITON_INTERPRET=1); on a GPU all three backends are.
    """
    import torch
    from tqdm import tqdm

    from tessera.bench.kernel_bench import default_shapes, time_shape

    if threads:
        torch.set_num_threads(threads)
    dev, dtype_name = resolve_device(device, dtype)
    on_gpu = dev.type == "cuda"

    shapes = default_shapes(dtype_name)[: 3 if quick else None]
    timings = [
        time_shape(shape, dev, with_triton=on_gpu, reps=reps)
        for shape in tqdm(shapes, desc="bench kernel", unit="shape")
    ]
    report: dict[str, object] = {
        "bench": "kernel",
        "device": describe_device(dev),
        "torch": torch.__version__,
        "dtype": dtype_name,
        "results": [t.as_dict() for t in timings],
        "min_speedup_vs_reference": min(t.speedup_vs_reference for t in timings),
    }
    if not on_gpu:
        report["note"] = (
            "no GPU: triton_ms not measured (the interpreter times Python, not the kernel); "
            "speedup_vs_reference is the torch path's"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(json.dumps(report))

