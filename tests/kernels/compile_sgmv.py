"""Compile the SGMV kernels ahead of time for GPU targets, without a GPU.

Run as a script in a process where TRITON_INTERPRET is unset (the interpreter would hand
back interpreted functions, which cannot be compiled). Triton's bundled ptxas turns each
kernel into a cubin, which catches what the interpreter lets through: compiled-mode
typing, constexpr use, tl.dot shape and dtype rules. Prints one line per kernel build
and exits non-zero on the first failure.
"""

from __future__ import annotations

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from tessera.kernels import triton_sgmv

SEGMENT_PTRS = {
    "sorted_ids_ptr": "*i64",
    "seg_slots_ptr": "*i64",
    "seg_starts_ptr": "*i64",
    "seg_lens_ptr": "*i64",
}


def _signature(kernel: object, ptrs: dict[str, str], consts: dict[str, object]) -> dict[str, str]:
    names: list[str] = kernel.arg_names  # type: ignore[attr-defined]
    return {n: "constexpr" if n in consts else ptrs.get(n, "i32") for n in names}


def _build(kernel: object, ptrs: dict[str, str], consts: dict[str, object], arch: int) -> str:
    src = ASTSource(kernel, _signature(kernel, ptrs, consts), consts)
    compiled = triton.compile(
        src, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4, "num_stages": 2}
    )
    ptx: str = compiled.asm["ptx"]
    return "tensor-core mma" if "mma" in ptx else "fma"


def main() -> int:
    for arch in (80, 90):
        for dtype, upcast, precision in (("bf16", False, "tf32"), ("fp32", True, "ieee")):
            shrink_ptrs = {"x_ptr": f"*{dtype}", "a_ptr": f"*{dtype}", "scales_ptr": "*fp32"}
            shrink_ptrs |= {"buf_ptr": "*fp32"} | SEGMENT_PTRS
            expand_ptrs = {"buf_ptr": "*fp32", "b_ptr": f"*{dtype}", "y_ptr": f"*{dtype}"}
            expand_ptrs |= SEGMENT_PTRS
            common = {"BLOCK_M": 16, "BLOCK_R": 16, "UPCAST": upcast, "PRECISION": precision}
            kind = _build(
                triton_sgmv._sgmv_shrink_kernel, shrink_ptrs, common | {"BLOCK_K": 64}, arch
            )
            print(f"sm_{arch} shrink {dtype}: {kind}")
            kind = _build(
                triton_sgmv._sgmv_expand_kernel, expand_ptrs, common | {"BLOCK_N": 64}, arch
            )
            print(f"sm_{arch} expand {dtype}: {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
