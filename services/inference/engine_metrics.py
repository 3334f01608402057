"""The inference engine's Prometheus metrics (served on `/metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("tessera_inference_requests", "Inference requests by outcome.", ["outcome"])
QUEUE_DEPTH = Gauge("tessera_inference_queue_depth", "Requests waiting for admission.")
RUNNING = Gauge("tessera_inference_running", "Sequences in the running batch.")
TTFT = Histogram(
    "tessera_inference_ttft_seconds",
    "Time to first token.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
TOKENS = Counter("tessera_inference_tokens_generated", "Tokens generated, all requests.")
TPOT = Histogram(
    "tessera_inference_time_per_output_token_seconds",
    "Per finished request: (total - time to first token) / (output tokens - 1).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
