"""`GET /metrics`: this process's Prometheus metrics in the text exposition format.

Everything registered with prometheus-client's default registry: HTTP requests and
latency per route (services/observability/http_metrics.py), the engine's queue depth,
TTFT, time per output token and tokens generated, adapter residency hits, misses and
loads, served-revision swaps, ingest admission. With `--workers` > 1 each HTTP process
has its own registry: scrape each replica process separately (or run one per replica).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
