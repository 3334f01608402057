"""The torch path and the reference loop against the definition, over a parametrised grid."""

from __future__ import annotations

import itertools
from typing import cast

import pytest
import torch

from tessera.kernels import (
    Backend,
    LoraOpError,
    add_lora,
    build_batch_meta,
    lora_expand,
    lora_shrink,
    torch_ops,
)

from .cases import TOLERANCES, exact_delta, make_case

F32 = torch.float32
DTYPES = [F32, torch.float16, torch.bfloat16]
GRID = list(itertools.product([1, 7, 64, 256], [1, 5, 64], [1, 8, 64]))


@pytest.fixture(params=["gather", "segments"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each case through both torch strategies, not only the one the heuristic picks."""
    threshold = 10**12 if request.param == "gather" else -1
    monkeypatch.setattr(torch_ops, "GATHER_ELEMENTS_PER_SEGMENT", threshold)
    return str(request.param)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("tokens", "adapters", "rank"), GRID)
def test_torch_path_matches_reference(
    tokens: int, adapters: int, rank: int, dtype: torch.dtype, strategy: str
) -> None:
    case = make_case(
        tokens=tokens, adapters=adapters, rank=rank, in_features=96, out_features=80, dtype=dtype
    )
    want, got = case.y.clone(), case.y.clone()
    add_lora(want, case.x, case.lora_a, case.lora_b, case.scales, case.meta, backend="reference")
    add_lora(got, case.x, case.lora_a, case.lora_b, case.scales, case.meta, backend="torch")

    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    base = case.slots < 0
    assert torch.equal(got[base], case.y[base]), "base-only rows must not change"


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_backends_match_the_definition_in_float64(backend: Backend) -> None:
    case = make_case(
        tokens=50, adapters=6, rank=8, in_features=64, out_features=48, dtype=torch.float32
    )
    y = case.y.clone()
    add_lora(y, case.x, case.lora_a, case.lora_b, case.scales, case.meta, backend=backend)
    want = case.y.double() + exact_delta(case)
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5)
    assert (want - case.y.double()).abs().max() > 0.1, "the case must move y"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous_activations(dtype: torch.dtype) -> None:
    case = make_case(
        tokens=33,
        adapters=4,
        rank=8,
        in_features=64,
        out_features=40,
        dtype=dtype,
        non_contiguous=True,
    )
    assert not case.x.is_contiguous() and not case.y.is_contiguous()
    want, got = case.y.clone(), case.y.clone()  # clone is contiguous: the reference's copy
    add_lora(
        want,
        case.x.contiguous(),
        case.lora_a,
        case.lora_b,
        case.scales,
        case.meta,
        backend="reference",
    )
    add_lora(got := case.y, case.x, case.lora_a, case.lora_b, case.scales, case.meta)
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def test_transposed_activations() -> None:
    case = make_case(
        tokens=20, adapters=3, rank=4, in_features=32, out_features=16, dtype=torch.float32
    )
    x_t = case.x.T.contiguous().T  # same values, column-major strides
    want, got = case.y.clone(), case.y.clone()
    add_lora(want, case.x, case.lora_a, case.lora_b, case.scales, case.meta, backend="reference")
    add_lora(got, x_t, case.lora_a, case.lora_b, case.scales, case.meta)
    torch.testing.assert_close(got, want)


def test_all_base_only_leaves_y_untouched() -> None:
    case = make_case(
        tokens=16,
        adapters=3,
        rank=8,
        in_features=32,
        out_features=32,
        dtype=torch.float32,
        base_fraction=1.0,
    )
    assert case.meta.no_lora
    y = case.y.clone()
    add_lora(y, case.x, case.lora_a, case.lora_b, case.scales, case.meta)
    assert torch.equal(y, case.y)
    buf = lora_shrink(case.x, case.lora_a, case.scales, case.meta)
    assert buf.shape == (0, 8)


def test_shrink_then_expand_equals_add_lora() -> None:
    case = make_case(
        tokens=40, adapters=5, rank=8, in_features=64, out_features=48, dtype=torch.float32
    )
    buf = lora_shrink(case.x, case.lora_a, case.scales, case.meta)
    assert buf.shape == (case.meta.num_lora_tokens, 8) and buf.dtype == torch.float32
    j = 0
    t = int(case.meta.sorted_token_ids[j])
    s = int(case.slots[t])
    torch.testing.assert_close(buf[j], case.x[t] @ case.lora_a[s].T * case.scales[s])
    split, fused = case.y.clone(), case.y.clone()
    lora_expand(split, buf, case.lora_b, case.meta)
    add_lora(fused, case.x, case.lora_a, case.lora_b, case.scales, case.meta)
    torch.testing.assert_close(split, fused)


BAD_INPUTS: list[tuple[str, dict[str, torch.Tensor], str]] = [
    ("x rank", {"x": torch.zeros(6, 32, 1)}, r"x must be \[T, in\]"),
    ("in mismatch", {"x": torch.zeros(6, 31)}, r"lora_a must be \[S, R, in=31\]"),
    ("tokens", {"x": torch.zeros(5, 32), "y": torch.zeros(5, 16)}, "built for 6 tokens"),
    ("out mismatch", {"y": torch.zeros(6, 15)}, r"lora_b must be \[S, out=15, R\]"),
    ("rank", {"lora_b": torch.zeros(3, 16, 5)}, r"lora_b must be \[S=3, out, R=4\]"),
    ("dtype", {"lora_a": torch.zeros(3, 4, 32, dtype=torch.float16)}, "cast the slot table"),
    ("int x", {"x": torch.zeros(6, 32, dtype=torch.int64)}, "must be float32"),
    ("scales", {"scales": torch.ones(2)}, r"scales must be \[S=3\]"),
    ("slot range", {"slots": torch.tensor([0, 1, 2, 3, -1, 0])}, "holds only 3 slots"),
]


@pytest.mark.parametrize(
    ("what", "override", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_inputs_are_refused_before_compute(
    what: str, override: dict[str, torch.Tensor], message: str
) -> None:
    args = {
        "y": torch.zeros(6, 16),
        "x": torch.zeros(6, 32),
        "lora_a": torch.zeros(3, 4, 32),
        "lora_b": torch.zeros(3, 16, 4),
        "scales": torch.ones(3),
        "slots": torch.tensor([0, 1, 2, 2, -1, 0]),
    } | override
    meta = build_batch_meta(args["slots"])
    y_before = args["y"].clone()
    with pytest.raises(LoraOpError, match=message):
        add_lora(args["y"], args["x"], args["lora_a"], args["lora_b"], args["scales"], meta)
    assert torch.equal(args["y"], y_before)


def test_unknown_backend_is_refused() -> None:
    case = make_case(
        tokens=4, adapters=2, rank=4, in_features=16, out_features=16, dtype=torch.float32
    )
    with pytest.raises(LoraOpError, match="unknown backend"):
        add_lora(
            case.y,
            case.x,
            case.lora_a,
            case.lora_b,
            case.scales,
            case.meta,
            backend=cast(Backend, "cuda"),
        )


def test_forcing_triton_without_cuda_or_interpreter_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    case = make_case(
        tokens=4, adapters=2, rank=4, in_features=16, out_features=16, dtype=torch.float32
    )
    with pytest.raises(LoraOpError, match="TRITON_INTERPRET"):
        add_lora(case.y, case.x, case.lora_a, case.lora_b, case.scales, case.meta, backend="triton")


def test_one_shrink_feeds_projections_that_share_x() -> None:
    """Stacking two projections' A along the rank and expanding from column slices of the
    buffer (a strided [N, R] view) equals two separate add_lora calls."""
    q = make_case(tokens=24, adapters=4, rank=8, in_features=32, out_features=48, dtype=F32)
    v = make_case(tokens=24, adapters=4, rank=8, in_features=32, out_features=16, dtype=F32, seed=1)
    stacked_a = torch.cat([q.lora_a, v.lora_a], dim=1)  # [S, 2R, in]
    buf = lora_shrink(q.x, stacked_a, q.scales, q.meta)  # [N, 2R]
    got_q, got_v = q.y.clone(), v.y.clone()
    lora_expand(got_q, buf[:, :8], q.lora_b, q.meta)
    lora_expand(got_v, buf[:, 8:], v.lora_b, q.meta)

    want_q, want_v = q.y.clone(), v.y.clone()
    add_lora(want_q, q.x, q.lora_a, q.lora_b, q.scales, q.meta, backend="reference")
    add_lora(want_v, q.x, v.lora_a, v.lora_b, q.scales, q.meta, backend="reference")
    torch.testing.assert_close(got_q, want_q)
    torch.testing.assert_close(got_v, want_v)
