"""The Triton SGMV kernels against the reference loop.

On CPU they run under the Triton interpreter (set by this folder's conftest); on a
machine with CUDA, run with TRITON_INTERPRET=0 to test the compiled kernels on the GPU.
The interpreter is slow, so the grid is a sampled cover of the edges rather than the
full product: 1 / odd / 256 tokens, 1 / 7 / 64 adapters, ranks 1 .. 64 (and one rank
above the rank tile), every dtype, feature sizes that leave partial tiles.
"""

from __future__ import annotations

import os

import pytest
import torch

from tessera.kernels import add_lora, lora_expand, lora_shrink, resolve_backend, triton_sgmv
from tessera.kernels.triton_sgmv import SgmvConfig

from .cases import TOLERANCES, make_case

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = torch.device("cpu" if INTERPRETING or not torch.cuda.is_available() else "cuda")

pytestmark = pytest.mark.skipif(
    DEVICE.type == "cpu" and not INTERPRETING,
    reason="no CUDA and TRITON_INTERPRET is not 1: the kernels cannot run here",
)

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
# (tokens, adapters, rank, dtype, non_contiguous)
SAMPLED_GRID = [
    (1, 1, 1, F32, False),
    (1, 64, 64, BF16, False),
    (17, 7, 16, F16, False),
    (17, 64, 1, BF16, True),
    (64, 64, 64, F32, False),
    (100, 5, 8, F16, True),
    (256, 1, 64, F32, False),
    (256, 7, 8, BF16, False),
    (256, 64, 16, F16, False),
    (256, 64, 64, BF16, True),
    (33, 3, 80, F32, False),  # rank above the 64-wide rank tile: two tiles / two steps
]


@pytest.mark.parametrize(
    ("tokens", "adapters", "rank", "dtype", "non_contiguous"),
    SAMPLED_GRID,
    ids=[
        f"T{t}-S{s}-R{r}-{str(d)[6:]}{'-strided' if nc else ''}" for t, s, r, d, nc in SAMPLED_GRID
    ],
)
def test_triton_matches_reference(
    tokens: int, adapters: int, rank: int, dtype: torch.dtype, non_contiguous: bool
) -> None:
    # 40 input / 72 output features: partial k tiles in shrink, a partial second n tile in expand
    case = make_case(
        tokens=tokens,
        adapters=adapters,
        rank=rank,
        in_features=40,
        out_features=72,
        dtype=dtype,
        non_contiguous=non_contiguous,
        seed=tokens * 1000 + adapters,
        device=DEVICE,
    )
    want, got = case.y.clone(), case.y.clone()
    add_lora(want, case.x, case.lora_a, case.lora_b, case.scales, case.meta, backend="reference")
    if non_contiguous:
        assert not case.x.is_contiguous() and not case.y.is_contiguous()
        got = case.y  # the strided view itself is updated in place
    add_lora(got, case.x, case.lora_a, case.lora_b, case.scales, case.meta, backend="triton")

    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    base = case.slots < 0
    assert torch.equal(got[base], want[base]), "base-only rows must not change"


def test_small_tiles_cover_many_tiles_and_k_steps() -> None:
    """Tiles far smaller than the problem: many token tiles per segment, many k steps."""
    case = make_case(
        tokens=90,
        adapters=3,
        rank=24,
        in_features=50,
        out_features=36,
        dtype=F32,
        seed=7,
        device=DEVICE,
    )
    cfg = SgmvConfig(block_m=16, block_n=16, block_k=16, block_r=16)
    buf = triton_sgmv.sgmv_shrink(case.x, case.lora_a, case.scales, case.meta, cfg)
    torch.testing.assert_close(
        buf, lora_shrink(case.x, case.lora_a, case.scales, case.meta, backend="torch")
    )
    got, want = case.y.clone(), case.y.clone()
    triton_sgmv.sgmv_expand(got, buf, case.lora_b, case.meta, cfg)
    lora_expand(want, buf, case.lora_b, case.meta, backend="torch")
    torch.testing.assert_close(got, want)


def test_all_base_only_exits_early() -> None:
    case = make_case(
        tokens=9,
        adapters=2,
        rank=8,
        in_features=16,
        out_features=16,
        dtype=BF16,
        base_fraction=1.0,
        device=DEVICE,
    )
    y = case.y.clone()
    add_lora(y, case.x, case.lora_a, case.lora_b, case.scales, case.meta, backend="triton")
    assert torch.equal(y, case.y)


def test_forced_auto_dispatch_picks_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_FORCE_TRITON", "1")
    assert resolve_backend("auto", DEVICE) == "triton"
    monkeypatch.delenv("TESSERA_FORCE_TRITON")
    assert resolve_backend("auto", DEVICE) == ("triton" if DEVICE.type == "cuda" else "torch")


def test_config_refuses_tiles_tl_dot_cannot_take() -> None:
    with pytest.raises(ValueError, match="power of two >= 16"):
        SgmvConfig(block_m=8)
    with pytest.raises(ValueError, match="power of two >= 16"):
        SgmvConfig(block_n=48)


def test_expand_reads_a_strided_buffer_slice() -> None:
    """Projections sharing x: one shrink over stacked A, expand from a column slice."""
    q = make_case(
        tokens=24, adapters=4, rank=8, in_features=32, out_features=48, dtype=F16, device=DEVICE
    )
    v = make_case(
        tokens=24,
        adapters=4,
        rank=8,
        in_features=32,
        out_features=16,
        dtype=F16,
        seed=1,
        device=DEVICE,
    )
    buf = lora_shrink(
        q.x, torch.cat([q.lora_a, v.lora_a], dim=1), q.scales, q.meta, backend="triton"
    )
    got_v, want_v = v.y.clone(), v.y.clone()
    lora_expand(got_v, buf[:, 8:], v.lora_b, q.meta, backend="triton")
    add_lora(want_v, q.x, v.lora_a, v.lora_b, q.scales, q.meta, backend="reference")
    rtol, atol = TOLERANCES[F16]
    torch.testing.assert_close(got_v, want_v, rtol=rtol, atol=atol)
