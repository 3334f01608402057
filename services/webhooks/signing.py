"""How a webhook is signed, and how a receiver checks it.

Each POST carries `X-Tessera-Timestamp: <unix seconds>` and
`X-Tessera-Signature: v1=<hex>`, where hex = HMAC-SHA256(secret, f"{timestamp}." + body).
The timestamp is inside the signed text, so a captured request cannot be replayed later
with a fresh timestamp; receivers refuse timestamps older than a few minutes.
`X-Tessera-Delivery` is the event id: deliveries are at least once, dedupe by it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

TIMESTAMP_HEADER: Final = "X-Tessera-Timestamp"
SIGNATURE_HEADER: Final = "X-Tessera-Signature"
EVENT_HEADER: Final = "X-Tessera-Event"
DELIVERY_HEADER: Final = "X-Tessera-Delivery"
_SCHEME: Final = "v1="


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Tessera-Signature` value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return _SCHEME + mac.hexdigest()


def verify(
    secret: str,
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a received webhook is authentic and fresh (constant-time comparison)."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    sent = int(timestamp)
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)
