"""The ingest core, independent of transport: validate a batch, publish it, await acks.

HTTP (`routes/ingest.py`) and gRPC (`grpc_ingest.py`) both call `IngestService`; each
only translates its wire format in and the errors below out.

Policy: a batch is accepted whole or not at all. If any item is invalid, nothing is
produced and the caller gets every problem at once (index, field, what is wrong), so a
client can never half-send a batch and wonder which half landed. The `202` is sent only
after the broker has acknowledged every record (`acks=all`), so an accepted event is
durable on the stream; if the broker fails part-way, the caller gets `503` and should
retry the same batch: `event_id` is the idempotency key, so records that did land are
not stored twice (clients that want safe retries send their own `event_id`s; an id is
unique per tenant, so another tenant's choice of ids never matters).

What the stream worker would refuse, the API refuses first: every envelope is encoded as
the record it is published as, that record's size is checked against `max_record_bytes`
(413: the broker would refuse it on every retry) and the envelope against the worker's
own rules (`schemas.event_rules`, 422), so a `202` is never followed by a dead letter.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError

from tessera.events.kafka import encode_envelope, stream_key
from tessera.events.kafka_publisher import KafkaPublisher, PublishError
from tessera.schemas.api import (
    ITEM_KINDS,
    LIMITS_CONTEXT_KEY,
    AnyItem,
    IngestLimits,
    ItemError,
    item_data,
    limited_request_model,
)
from tessera.schemas.event_rules import NUL_ESCAPE, Refusal, refusal_of
from tessera.schemas.events import EventEnvelope
from tessera.schemas.settings import Settings
from tessera.services.ingest.admission import Admission
from tessera.services.quotas import TenantQuotas

# Discriminated-union errors for a bad or missing "type" are located at the item itself.
_TAG_ERRORS: Final = frozenset({"union_tag_invalid", "union_tag_not_found"})
# Envelope fields as the API's items name them (the payload's are the item's own fields).
_ITEM_FIELDS: Final = {"event_type": "type", "user_id": "user_id"}

Record = tuple[bytes, bytes]  # (key, value) as published


class IngestError(Exception):
    """Base of the errors a transport turns into a response."""


class InvalidBatch(IngestError):
    """The batch (or its body) is invalid; nothing was published."""

    def __init__(self, detail: str, errors: Sequence[ItemError], *, too_large: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.too_large = too_large


class StreamUnavailable(IngestError):
    """The broker did not acknowledge every record; the caller should retry the batch."""


class DeadlineExceeded(IngestError):
    """The caller's deadline passed before every record was acknowledged (gRPC
    DEADLINE_EXCEEDED); the batch may or may not be on the stream: retry it as is."""


def item_errors(exc: ValidationError) -> list[ItemError]:
    """Pydantic's errors as `ItemError`s: item index, path inside the item, problem."""
    out: list[ItemError] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = list(err["loc"])
        kind = err["type"]
        if kind == "json_invalid":
            out.append(ItemError(index=None, field="body", problem=err["msg"], type=kind))
            continue
        if len(loc) < 2 or loc[0] != "events" or not isinstance(loc[1], int):
            field = ".".join(str(p) for p in loc) or "body"
            out.append(ItemError(index=None, field=field, problem=err["msg"], type=kind))
            continue
        index, rest = loc[1], loc[2:]
        if kind in _TAG_ERRORS:
            out.append(ItemError(index=index, field="type", problem=err["msg"], type=kind))
            continue
        if rest and rest[0] in ITEM_KINDS:  # the union's tag, not part of the item
            rest = rest[1:]
        out.append(ItemError(index=index, field=_path(rest), problem=err["msg"], type=kind))
    return out


def _path(parts: Sequence[int | str]) -> str:
    """`["context", 2, "text"]` -> `context[2].text`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "item"


def to_envelopes(items: Sequence[AnyItem], *, tenant_id: str) -> list[EventEnvelope]:
    """Validated API items as the envelopes published for them (server-assigned ids
    for items that came without one)."""
    return [
        EventEnvelope(
            event_id=item.event_id or uuid.uuid4(),
            event_type=ITEM_KINDS[item.type][0],
            tenant_id=tenant_id,
            user_id=item.user_id,
            occurred_at=item.occurred_at,
            correlation_id=item.correlation_id,
            data=item_data(item),
        )
        for item in items
    ]


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """What the service needs from `Settings`."""

    topic: str
    max_batch_events: int
    max_text_chars: int
    max_future_skew: timedelta
    max_past_age: timedelta
    ack_timeout_s: float = 30.0
    max_record_bytes: int = 1_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestConfig:
        return cls(
            topic=settings.topic_interactions,
            max_batch_events=settings.max_batch_events,
            max_text_chars=settings.max_text_chars,
            max_future_skew=timedelta(seconds=settings.max_future_skew_s),
            max_past_age=timedelta(days=settings.max_past_age_days),
            max_record_bytes=settings.max_record_bytes,
        )


class IngestService:
    """Validates batches for one tenant and publishes them to `tessera.interactions`."""

    def __init__(
        self,
        *,
        publisher: KafkaPublisher,
        config: IngestConfig,
        admission: Admission | None = None,
        quotas: TenantQuotas | None = None,
    ) -> None:
        self._publisher = publisher
        self.config = config
        self._admission = admission
        self._quotas = quotas

    # --- validation -------------------------------------------------------------------

    def parse(self, body: bytes | Mapping[str, Any], *, tenant_id: str) -> list[EventEnvelope]:
        """Validate a request body (raw JSON bytes, or an already-decoded mapping from
        gRPC) into envelopes for `tenant_id`. Raises `InvalidBatch` listing every problem."""
        return self.prepare(body, tenant_id=tenant_id)[0]

    def prepare(
        self, body: bytes | Mapping[str, Any], *, tenant_id: str
    ) -> tuple[list[EventEnvelope], list[Record]]:
        """`parse`, and the records to publish: each envelope encoded once, its size and
        the stream worker's rules checked on exactly those bytes."""
        envelopes = self._validate(body, tenant_id=tenant_id)
        records = [(stream_key(env), encode_envelope(env)) for env in envelopes]
        self._check_records(envelopes, records)
        return envelopes, records

    def _validate(self, body: bytes | Mapping[str, Any], *, tenant_id: str) -> list[EventEnvelope]:
        model = limited_request_model(self.config.max_text_chars, self.config.max_batch_events)
        limits = IngestLimits(
            max_future_skew=self.config.max_future_skew,
            max_past_age=self.config.max_past_age,
            now=datetime.now(UTC),
        )
        context = {LIMITS_CONTEXT_KEY: limits}
        try:
            if isinstance(body, bytes | bytearray):
                request = model.model_validate_json(body, context=context)
            else:
                request = model.model_validate(body, context=context)
        except ValidationError as exc:
            if any(e["type"] == "too_long" and e["loc"] == ("events",) for e in exc.errors()):
                raise self._too_large(None) from None
            errors = item_errors(exc)
            bad_items = {e.index for e in errors if e.index is not None}
            what = f"{len(bad_items)} item(s) invalid" if bad_items else "the request is invalid"
            raise InvalidBatch(f"{what}; nothing was accepted", errors) from None
        if len(request.events) > self.config.max_batch_events:  # (the model caps it too)
            raise self._too_large(len(request.events))
        return to_envelopes(request.events, tenant_id=tenant_id)

    def _check_records(self, envelopes: Sequence[EventEnvelope], records: Sequence[Record]) -> None:
        """Refuse the batch if any record is over `max_record_bytes` (413) or would be
        refused by the stream worker (422), listing every such item."""
        limit, max_chars = self.config.max_record_bytes, self.config.max_text_chars
        errors: list[ItemError] = []
        too_large = False
        for index, (env, (_, value)) in enumerate(zip(envelopes, records, strict=True)):
            if len(value) > limit:
                too_large = True
                problem = (
                    f"the event is {len(value)} bytes as a stream record, the limit is "
                    f"{limit} bytes; send it shorter (no retry can make it fit)"
                )
                errors.append(
                    ItemError(index=index, field="item", problem=problem, type="record_too_large")
                )
                continue
            # The worker's decision on the same bytes: same size, same NUL hint.
            refusal = refusal_of(
                env, max_text_chars=max_chars, raw_size=len(value), maybe_nul=NUL_ESCAPE in value
            )
            if refusal is not None:
                errors.append(_refusal_error(index, refusal))
        if not errors:
            return
        if too_large:
            detail = f"event(s) too large for the stream (limit {limit} bytes each)"
        else:
            detail = f"{len(errors)} item(s) invalid"
        raise InvalidBatch(f"{detail}; nothing was accepted", errors, too_large=too_large)

    def _too_large(self, count: int | None) -> InvalidBatch:
        limit = self.config.max_batch_events
        many = f"{count} events" if count is not None else f"more than {limit} events"
        return InvalidBatch(
            f"batch too large; send at most {limit} events per call",
            [
                ItemError(
                    index=None,
                    field="events",
                    problem=f"{many} in one call; the limit is {limit}",
                    type="too_long",
                )
            ],
            too_large=True,
        )

    # --- publishing -------------------------------------------------------------------

    def publish(self, records: Sequence[Record]) -> Future[list[int]]:
        """Send every record (keyed `tenant/user`, in order); the future resolves once
        the broker acknowledged all of them (to the indexes of the last record sent to
        each partition), or fails with `PublishError`."""
        return self._publisher.publish(self.config.topic, records)

    def ingest(
        self, body: bytes | Mapping[str, Any], *, tenant_id: str, deadline_s: float | None = None
    ) -> list[uuid.UUID]:
        """Blocking: validate, publish, wait for the acks (for threaded callers: gRPC).
        `deadline_s`: how long the caller still waits (gRPC's time remaining); once it
        has passed, `DeadlineExceeded` rather than holding the caller's thread longer."""
        give_up = None if deadline_s is None else time.monotonic() + deadline_s
        self._take_quota(tenant_id, None)
        envelopes, records = self.prepare(body, tenant_id=tenant_id)
        self._take_quota(tenant_id, len(envelopes))
        self._reserve(envelopes, give_up)
        wait_s = self.config.ack_timeout_s
        if give_up is not None:
            wait_s = min(wait_s, give_up - time.monotonic())
            if wait_s <= 0:  # nobody waits for the answer: publish nothing
                self._release(envelopes)
                raise DeadlineExceeded(_deadline_message())
        try:
            lasts = self.publish(records).result(timeout=wait_s)
        except PublishError as exc:
            self._release(envelopes)
            raise StreamUnavailable(_retry_message(str(exc))) from exc
        except TimeoutError as exc:
            self._release(envelopes)
            if wait_s < self.config.ack_timeout_s:
                raise DeadlineExceeded(_deadline_message()) from exc
            raise StreamUnavailable(_retry_message(_timeout(self.config))) from exc
        return self._accepted(envelopes, lasts)

    async def ingest_async(self, body: bytes, *, tenant_id: str) -> list[uuid.UUID]:
        """Same as `ingest`, awaiting the acks without blocking the event loop."""
        if self._quotas is not None and not self._quotas.knows(tenant_id):
            await asyncio.to_thread(self._quotas.rates, tenant_id)  # a database read
        self._take_quota(tenant_id, None)
        envelopes, records = self.prepare(body, tenant_id=tenant_id)
        self._take_quota(tenant_id, len(envelopes))
        await self._reserve_async(envelopes)
        try:
            lasts = await asyncio.wait_for(
                asyncio.wrap_future(self.publish(records)), timeout=self.config.ack_timeout_s
            )
        except PublishError as exc:
            self._release(envelopes)
            raise StreamUnavailable(_retry_message(str(exc))) from exc
        except TimeoutError as exc:
            self._release(envelopes)
            raise StreamUnavailable(_retry_message(_timeout(self.config))) from exc
        except BaseException:  # cancelled (client gone): the batch may or may not be out
            self._release(envelopes)
            raise
        return self._accepted(envelopes, lasts)

    # --- per-tenant quota (see services/quotas.py) ------------------------------------

    def _take_quota(self, tenant_id: str, count: int | None) -> None:
        """Take `count` events from the tenant's quota, or `QuotaExceeded`. With None,
        only check that one event would pass: an over-quota tenant's body goes unparsed."""
        if self._quotas is None:
            return
        if count is None:
            self._quotas.check_events(tenant_id)
        else:
            self._quotas.take_events(tenant_id, count)

    # --- admission (see ingest.admission) ---------------------------------------------

    def _reserve(self, envelopes: Sequence[EventEnvelope], give_up: float | None = None) -> None:
        """Wait (blocking) for room under admission control; `LogBehind` if none came,
        `DeadlineExceeded` once the monotonic time `give_up` has passed."""
        for pause in self._room_waits(envelopes):
            if give_up is not None and time.monotonic() + pause >= give_up:
                raise DeadlineExceeded(_deadline_message())
            time.sleep(pause)

    async def _reserve_async(self, envelopes: Sequence[EventEnvelope]) -> None:
        """`_reserve` without blocking the event loop."""
        for pause in self._room_waits(envelopes):
            await asyncio.sleep(pause)

    def _room_waits(self, envelopes: Sequence[EventEnvelope]) -> Iterator[float]:
        """Claims room for the batch, yielding how long to pause between tries; raises
        `LogBehind` once `max_wait_s` has passed. Nothing to claim without admission."""
        admission = self._admission
        if admission is None or not envelopes:
            return
        deadline = time.monotonic() + admission.config.max_wait_s
        while not admission.try_reserve(len(envelopes)):
            if time.monotonic() >= deadline:
                raise admission.refusal(len(envelopes))
            yield admission.config.poll_s / 2

    def _release(self, envelopes: Sequence[EventEnvelope]) -> None:
        if self._admission is not None and envelopes:
            self._admission.release(len(envelopes))

    def _accepted(self, envelopes: Sequence[EventEnvelope], lasts: list[int]) -> list[uuid.UUID]:
        if self._admission is not None and envelopes:
            markers = [(envelopes[i].tenant_id, envelopes[i].event_id) for i in lasts]
            self._admission.accepted(len(envelopes), markers)
        return [env.event_id for env in envelopes]

    def close(self) -> None:
        """Wait for what is in flight and close the publisher (and the admission poller)."""
        self._publisher.close()
        if self._admission is not None:
            self._admission.close()


def _refusal_error(index: int, refusal: Refusal) -> ItemError:
    """A worker rule's refusal located as the API's items are: `data.context.0.text`
    (a path in the envelope) is the item's `context[0].text`."""
    parts: list[int | str] = [int(p) if p.isdigit() else p for p in refusal.field.split(".")]
    if parts[0] == "data":
        field = _path(parts[1:])
    else:
        field = _ITEM_FIELDS.get(str(parts[0]), _path(parts))
    return ItemError(index=index, field=field, problem=refusal.problem, type=refusal.type)


def _timeout(config: IngestConfig) -> str:
    return f"no acknowledgement within {config.ack_timeout_s:.0f} s"


def _deadline_message() -> str:
    return "the call's deadline passed before the event stream took the batch; retry the same batch"


def _retry_message(cause: str) -> str:
    return f"the event stream did not take the batch ({cause}); retry the same batch"
