"""`tessera bench residency` on the tiny model: the JSON it promises, and figures that
hang together (the all-resident arm only hits slots; prefetch lowers the cold share)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tessera.bench import residency_bench as rb
from tessera.bench.cli import app

KEYS = {
    "adapters", "device_slots", "cpu_cache", "tok_s", "resident_tok_s", "vs_resident",
    "slot_hit_rate", "cpu_hit_rate", "cold_load_p50_ms", "cold_load_p99_ms",
    "cold_ttft_p99_ms", "cold_share_with_prefetch", "cold_share_without_prefetch",
}


def test_zipf_users_follow_popularity() -> None:
    users = rb.zipf_users(100, 5000, 1.1, seed=0)
    top = users.count(0)
    assert users == rb.zipf_users(100, 5000, 1.1, seed=0)  # same seed, same load
    assert top > users.count(9) > users.count(99) and 0.15 < top / 5000 < 0.3
    assert rb.percentile([0.001 * v for v in range(1, 101)], 0.99) == 0.099


def test_bench_residency_json_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "residency.json"
    store = tmp_path / "store"
    args = [
        "bench", "residency", "--model", str(tiny_model_dir), "--adapters", "24",
        "--device-slots", "2", "--cpu-cache", "8", "--requests", "40", "--rate", "20",
        "--max-tokens", "3", "--max-batch", "4", "--prefetch", "--prefetch-lead-s", "0.2",
        "--store-dir", str(store), "--out", str(out),
    ]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    result = json.loads(out.read_text())
    # the last line printed is the JSON (stderr's progress bars end in \r, not \n)
    assert run.output.rstrip().endswith(json.dumps(result)) and set(result) >= KEYS
    assert result["adapters"] == 24 and len(list(store.glob("??/*.safetensors"))) == 24
    assert result["resident_tok_s"] > 0 and result["tok_s"] > 0
    assert 0 <= result["slot_hit_rate"] < 1 and 0 <= result["cpu_hit_rate"] < 1
    assert result["cold_requests"] > 0 and result["cold_load_p99_ms"] > 0
    assert result["cold_load_p99_ms"] >= result["cold_load_p50_ms"]
    counters = result["counters"]
    assert counters["cpu_misses"] == result["cold_requests"]  # one store read per cold wait
    assert result["cold_share_without_prefetch"] == round(result["cold_requests"] / 40, 3)
    assert result["cold_share_with_prefetch"] < result["cold_share_without_prefetch"]
    assert result["prefetch_counters"]["prefetch_queued"] > 0
    # a rerun reuses the store's blobs (same manifest) instead of writing them again
    manifest = store / "bench-residency.json"
    written = manifest.stat().st_mtime_ns
    again = CliRunner().invoke(app, [*args[:-2], "--requests", "4", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert manifest.stat().st_mtime_ns == written and json.loads(out.read_text())["requests"] == 4
