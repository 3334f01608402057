"""Deliver one notification to one tenant's webhook: signed, retried, every try logged.

A try succeeds on any 2xx. Connection errors, timeouts, 408, 425, 429 and 5xx are
retried with exponential backoff (tenacity: first_delay_s, 2x, 4x, ... capped at
max_delay_s) up to max_attempts; any other status means the receiver refuses this
body (a bad signature, say) and is not retried. Each try is signed afresh (its own
timestamp) and is one row of the delivery log. Redirects are not followed, so a
signed body never goes to a host the tenant did not name. Unless `allow_private_hosts`,
a URL whose host resolves to a loopback, private, link-local or reserved address is not
posted to (a tenant key could otherwise make the server call inside its own network);
the check runs before each try, so DNS rebinding between check and connect remains.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import httpx
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity import wait_exponential as exponential

from tessera.events.webhooks import DeliveryAttempt, Webhook, WebhookStore
from tessera.services.webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)

log = logging.getLogger(__name__)

RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
_MAX_ERROR_CHARS: Final = 500


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    timeout_s: float = 10.0
    allow_private_hosts: bool = False


@dataclass(frozen=True, slots=True)
class Notification:
    """One event, as its JSON body and the ids the delivery log keeps."""

    event_id: uuid.UUID
    event_type: str
    tenant_id: str
    position: int
    body: bytes


class _TryAgain(Exception):
    """This try failed in a way a later one may not."""


def private_host(url: str) -> str | None:
    """Why `url`'s host may not be posted to (an internal address), or None."""
    host = httpx.URL(url).host
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None  # unresolvable: the POST fails with its own error, and is retried
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_reserved or address.is_multicast:
            return f"{host} resolves to the non-public address {address}"
    return None


class WebhookSender:
    def __init__(
        self,
        hooks: WebhookStore,
        policy: RetryPolicy | None = None,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._hooks = hooks
        self._policy = policy or RetryPolicy()
        self._client = client or httpx.Client(follow_redirects=False)
        self._sleep = sleep
        self._clock = clock

    def close(self) -> None:
        self._client.close()

    def deliver(self, hook: Webhook, note: Notification) -> bool:
        """Post `note` to `hook` until it is accepted or the policy gives up."""
        p = self._policy
        retrying = Retrying(
            stop=stop_after_attempt(p.max_attempts),
            wait=exponential(multiplier=p.first_delay_s, max=p.max_delay_s),
            retry=retry_if_exception_type(_TryAgain),
            sleep=self._sleep,
        )
        try:
            for attempt in retrying:
                with attempt:
                    accepted = self._try(hook, note, attempt.retry_state.attempt_number)
            return accepted
        except RetryError:
            log.warning("webhook for %s gave up after %d tries", note.event_id, p.max_attempts,
                        extra={"tenant_id": note.tenant_id})
            return False

    def _try(self, hook: Webhook, note: Notification, number: int) -> bool:
        """One signed POST; True if accepted, False if refused for good, `_TryAgain`."""
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(hook.secret, timestamp, note.body),
            EVENT_HEADER: note.event_type,
            DELIVERY_HEADER: str(note.event_id),
        }
        status: int | None = None
        error = None if self._policy.allow_private_hosts else private_host(hook.url)
        if error is not None:
            self._record(note, hook, number, ok=False, status=None,
                         error=f"refused: {error} (TESSERA_WEBHOOK_ALLOW_PRIVATE_HOSTS)")
            return False
        try:
            response = self._client.post(hook.url, content=note.body, headers=headers,
                                         timeout=self._policy.timeout_s)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
        ok = status is not None and 200 <= status < 300
        if status is not None and not ok:
            error = f"HTTP {status}"
        self._record(note, hook, number, ok=ok, status=status, error=error)
        if ok:
            return True
        if status is None or status >= 500 or status in RETRYABLE_STATUS:
            raise _TryAgain(error)
        log.warning("webhook for %s refused with %s; not retried", note.event_id, error,
                    extra={"tenant_id": note.tenant_id})
        return False

    def _record(self, note: Notification, hook: Webhook, number: int, *, ok: bool,
                status: int | None, error: str | None) -> None:
        self._hooks.record_attempt(DeliveryAttempt(
            tenant_id=note.tenant_id, event_id=note.event_id, event_type=note.event_type,
            position=note.position, url=hook.url, attempt=number, ok=ok, status_code=status,
            error=error))
