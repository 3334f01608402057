"""Models of the public ingest API (HTTP JSON and, by translation, gRPC).

An ingest call carries a batch of *items*. An item is flat: the common fields
(`event_id`, `type`, `user_id`, `occurred_at`, `correlation_id`) plus the fields of its
kind's payload (`schemas.events.ExchangeData`, `FeedbackData`, `TextData`), so a client
writes `{"type": "text", "user_id": "u1", "occurred_at": "...", "text": "hi"}`.

Limits that are configuration rather than contract are checked while parsing, so their
errors come out in the same list, located the same way, as every other validation
error: the longest text by `limited_request_model(max_text_chars)` (the models with
`max_length` added), the clock skew and oldest timestamp against an `IngestLimits`
passed as pydantic validation context (validated without it, they are not checked).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from tessera.schemas.events import (
    EventType,
    ExchangeData,
    FeedbackData,
    TextData,
    Turn,
    UserId,
)


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """The configured clock limits an item is checked against (from `Settings`)."""

    max_future_skew: timedelta
    max_past_age: timedelta
    # The clock the skew is measured from; fixed per batch so every item sees one "now".
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


LIMITS_CONTEXT_KEY: Final = "ingest_limits"

# Free text every API (HTTP, gRPC) bounds alike: a rollback's or forget's reason (kept in
# the log), and the ids an admin call names.
MAX_REASON_CHARS: Final = 2000
MAX_ID_CHARS: Final = 128


def _limits(info: ValidationInfo) -> IngestLimits | None:
    context = info.context
    if isinstance(context, dict):
        limits = context.get(LIMITS_CONTEXT_KEY)
        if isinstance(limits, IngestLimits):
            return limits
    return None


class _ItemCommon(BaseModel):
    """Fields every ingest item has, whatever its kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID | None = Field(
        None,
        description="Idempotency key. Send your own so a retried call is a no-op; "
        "when absent the server assigns one and returns it.",
    )
    user_id: UserId = Field(description="The app's id for the person; letters, digits, _.@:-")
    occurred_at: AwareDatetime = Field(
        description="When it happened, with a time zone (RFC 3339). Not further in the "
        "future than the server's allowed skew, nor older than its allowed age."
    )
    correlation_id: uuid.UUID | None = Field(
        None, description="Groups events of one session or request; stored as given."
    )

    @field_validator("occurred_at", mode="after")
    @classmethod
    def _within_clock_limits(cls, value: datetime, info: ValidationInfo) -> datetime:
        limits = _limits(info)
        if limits is None:
            return value
        if value > limits.now + limits.max_future_skew:
            raise PydanticCustomError(
                "timestamp_in_future",
                "{value} is more than {skew_s} s ahead of the server clock ({now}); "
                "send the time the interaction happened, in UTC or with its offset",
                {
                    "value": value.isoformat(),
                    "skew_s": round(limits.max_future_skew.total_seconds()),
                    "now": limits.now.isoformat(),
                },
            )
        if value < limits.now - limits.max_past_age:
            raise PydanticCustomError(
                "timestamp_too_old",
                "{value} is older than the oldest accepted ({days} days before now)",
                {"value": value.isoformat(), "days": limits.max_past_age.days},
            )
        return value


class ExchangeItem(_ItemCommon, ExchangeData):
    """A prompt and the response the user accepted or wrote."""

    type: Literal["exchange"]


class FeedbackItem(_ItemCommon, FeedbackData):
    """A rating and/or edited response for an earlier exchange."""

    type: Literal["feedback"]


class TextItem(_ItemCommon, TextData):
    """Free text the user authored."""

    type: Literal["text"]


AnyItem = ExchangeItem | FeedbackItem | TextItem
IngestItem = Annotated[AnyItem, Field(discriminator="type")]

# API kind -> (event type, payload model whose fields become the envelope's `data`).
ITEM_KINDS: Final[dict[str, tuple[EventType, type[BaseModel]]]] = {
    "exchange": (EventType.EXCHANGE, ExchangeData),
    "feedback": (EventType.FEEDBACK, FeedbackData),
    "text": (EventType.TEXT, TextData),
}

COMMON_FIELDS: Final = frozenset(_ItemCommon.model_fields) | {"type"}


def item_data(item: AnyItem) -> dict[str, Any]:
    """The item's payload fields as the JSON-ready dict an envelope's `data` holds.

    Serialized by its payload model (an item is a subclass of it), which writes exactly
    the payload's fields: the same dict as `model_dump(exclude=COMMON_FIELDS)`, in half
    the time (per event, on the ingest server's hot path)."""
    payload_model = ITEM_KINDS[item.type][1]
    data: dict[str, Any] = payload_model.__pydantic_serializer__.to_python(
        item, mode="json", exclude_none=True
    )
    return data


class IngestRequest(BaseModel):
    """Body of `POST /v1/events`: a batch of items, all for the caller's tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[IngestItem] = Field(
        min_length=1,
        description="At most the server's `max_batch_events` items (1,000 by default). "
        "A batch is accepted whole or not at all.",
    )


@lru_cache(maxsize=8)
def limited_request_model(
    max_text_chars: int, max_batch_events: int | None = None
) -> type[IngestRequest]:
    """`IngestRequest` with every text field (prompt, response, text, edited response,
    each context turn) capped at `max_text_chars`, checked in pydantic's core while
    parsing: a Python validator per field costs more than the rest of the parse. The
    payload fields keep their own constraints; only `max_length` is added. With
    `max_batch_events`, a longer `events` list fails at once with one `too_long` error,
    before its items are validated (a 20,000-item body costs a parse, not 20,000
    validations and their error list)."""
    cap = Field(max_length=max_text_chars)

    def capped(model: type[BaseModel], name: str) -> Any:
        info = model.model_fields[name]
        return (Annotated[info.annotation, cap], info)

    turn = create_model("Turn", __base__=Turn, text=capped(Turn, "text"))
    context = (list[turn], ExchangeData.model_fields["context"])
    exchange = create_model(
        "ExchangeItem",
        __base__=ExchangeItem,
        prompt=capped(ExchangeData, "prompt"),
        response=capped(ExchangeData, "response"),
        context=context,
    )
    feedback = create_model(
        "FeedbackItem",
        __base__=FeedbackItem,
        edited_response=capped(FeedbackData, "edited_response"),
    )
    text = create_model(
        "TextItem", __base__=TextItem, text=capped(TextData, "text"), context=context
    )
    item = Annotated[exchange | feedback | text, Field(discriminator="type")]
    events_type: Any = (
        list[item]
        if max_batch_events is None
        else Annotated[list[item], Field(max_length=max_batch_events)]
    )
    events = (events_type, IngestRequest.model_fields["events"])
    return create_model("IngestRequest", __base__=IngestRequest, events=events)


class IngestAccepted(BaseModel):
    """The `202` answer: every item is on the durable stream, in request order."""

    accepted: list[uuid.UUID] = Field(description="Event ids, one per item, in request order.")
    count: int = Field(ge=0)


class ItemError(BaseModel):
    """One problem with the request, located as precisely as the input allows."""

    index: int | None = Field(
        None, description="Position of the item in `events`; null for a whole-body problem."
    )
    field: str = Field(
        description="Path inside the item (e.g. `context[2].text`), `events` for the list, "
        "or `body` when the body is not valid JSON."
    )
    problem: str = Field(description="What is wrong, in words.")
    type: str = Field(description="Machine-readable kind, e.g. `missing`, `string_too_long`.")


class IngestRejected(BaseModel):
    """The `4xx` answer for a bad batch: nothing of it was accepted."""

    detail: str
    errors: list[ItemError] = Field(default_factory=list)
