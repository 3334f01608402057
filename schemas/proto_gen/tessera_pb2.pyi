import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Turn(_message.Message):
    __slots__ = ("role", "text")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    role: str
    text: str
    def __init__(self, role: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class Exchange(_message.Message):
    __slots__ = ("prompt", "response", "context")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    response: str
    context: _containers.RepeatedCompositeFieldContainer[Turn]
    def __init__(self, prompt: _Optional[str] = ..., response: _Optional[str] = ..., context: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("target_event_id", "rating", "edited_response")
    TARGET_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    EDITED_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    target_event_id: str
    rating: int
    edited_response: str
    def __init__(self, target_event_id: _Optional[str] = ..., rating: _Optional[int] = ..., edited_response: _Optional[str] = ...) -> None: ...

class Text(_message.Message):
    __slots__ = ("text", "context")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    context: _containers.RepeatedCompositeFieldContainer[Turn]
    def __init__(self, text: _Optional[str] = ..., context: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ...) -> None: ...

class IngestItem(_message.Message):
    __slots__ = ("event_id", "user_id", "occurred_at", "correlation_id", "exchange", "feedback", "text")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    occurred_at: _timestamp_pb2.Timestamp
    correlation_id: str
    exchange: Exchange
    feedback: Feedback
    text: Text
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., exchange: _Optional[_Union[Exchange, _Mapping]] = ..., feedback: _Optional[_Union[Feedback, _Mapping]] = ..., text: _Optional[_Union[Text, _Mapping]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[IngestItem]
    def __init__(self, events: _Optional[_Iterable[_Union[IngestItem, _Mapping]]] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("user_id", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "timeout_s", "repetition_penalty")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    prompt: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    timeout_s: float
    repetition_penalty: float
    def __init__(self, user_id: _Optional[str] = ..., prompt: _Optional[str] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., timeout_s: _Optional[float] = ..., repetition_penalty: _Optional[float] = ...) -> None: ...

class ServedRevision(_message.Message):
    __slots__ = ("revision_id", "adapter_digest", "source")
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    revision_id: str
    adapter_digest: str
    source: str
    def __init__(self, revision_id: _Optional[str] = ..., adapter_digest: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "text", "finish_reason", "revision", "prompt_tokens", "completion_tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    finish_reason: str
    revision: ServedRevision
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., finish_reason: _Optional[str] = ..., revision: _Optional[_Union[ServedRevision, _Mapping]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("request_id", "text", "revision", "done", "finish_reason", "prompt_tokens", "completion_tokens")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    revision: ServedRevision
    done: bool
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., revision: _Optional[_Union[ServedRevision, _Mapping]] = ..., done: _Optional[bool] = ..., finish_reason: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class AdminUserRef(_message.Message):
    __slots__ = ("tenant_id", "user_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class AuditRevision(_message.Message):
    __slots__ = ("revision_id", "tenant_id", "user_id", "kind", "parent_revision_id", "state", "served", "adapter_digest", "dataset_from", "dataset_to", "metrics", "reasons", "trigger", "trained_at", "decided_at", "children")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARENT_REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DATASET_FROM_FIELD_NUMBER: _ClassVar[int]
    DATASET_TO_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    TRAINED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    revision_id: str
    tenant_id: str
    user_id: str
    kind: str
    parent_revision_id: str
    state: str
    served: bool
    adapter_digest: str
    dataset_from: int
    dataset_to: int
    metrics: _containers.ScalarMap[str, float]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    trigger: str
    trained_at: _timestamp_pb2.Timestamp
    decided_at: _timestamp_pb2.Timestamp
    children: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, revision_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., kind: _Optional[str] = ..., parent_revision_id: _Optional[str] = ..., state: _Optional[str] = ..., served: _Optional[bool] = ..., adapter_digest: _Optional[str] = ..., dataset_from: _Optional[int] = ..., dataset_to: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., reasons: _Optional[_Iterable[str]] = ..., trigger: _Optional[str] = ..., trained_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., children: _Optional[_Iterable[str]] = ...) -> None: ...

class UserLineageResponse(_message.Message):
    __slots__ = ("tenant_id", "user_id", "served_revision_id", "served_source", "revisions", "roots", "interactions", "forgotten_at", "json")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVED_REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVED_SOURCE_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    ROOTS_FIELD_NUMBER: _ClassVar[int]
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    FORGOTTEN_AT_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    served_revision_id: str
    served_source: str
    revisions: _containers.RepeatedCompositeFieldContainer[AuditRevision]
    roots: _containers.RepeatedScalarFieldContainer[str]
    interactions: int
    forgotten_at: _timestamp_pb2.Timestamp
    json: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., served_revision_id: _Optional[str] = ..., served_source: _Optional[str] = ..., revisions: _Optional[_Iterable[_Union[AuditRevision, _Mapping]]] = ..., roots: _Optional[_Iterable[str]] = ..., interactions: _Optional[int] = ..., forgotten_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., json: _Optional[str] = ...) -> None: ...

class RevisionRef(_message.Message):
    __slots__ = ("revision_id",)
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    revision_id: str
    def __init__(self, revision_id: _Optional[str] = ...) -> None: ...

class RevisionProvenanceResponse(_message.Message):
    __slots__ = ("revision", "provenance_json", "dataset_events", "json")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_JSON_FIELD_NUMBER: _ClassVar[int]
    DATASET_EVENTS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    revision: AuditRevision
    provenance_json: str
    dataset_events: int
    json: str
    def __init__(self, revision: _Optional[_Union[AuditRevision, _Mapping]] = ..., provenance_json: _Optional[str] = ..., dataset_events: _Optional[int] = ..., json: _Optional[str] = ...) -> None: ...

class RequestRef(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class RequestAuditResponse(_message.Message):
    __slots__ = ("request_id", "tenant_id", "user_id", "revision_id", "adapter_digest", "source", "at", "json")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tenant_id: str
    user_id: str
    revision_id: str
    adapter_digest: str
    source: str
    at: _timestamp_pb2.Timestamp
    json: str
    def __init__(self, request_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., revision_id: _Optional[str] = ..., adapter_digest: _Optional[str] = ..., source: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., json: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("tenant_id", "user_id", "to_revision_id", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    to_revision_id: str
    reason: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., to_revision_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("from_revision_id", "to_revision_id", "event_id", "position", "published", "json")
    FROM_REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    from_revision_id: str
    to_revision_id: str
    event_id: str
    position: int
    published: bool
    json: str
    def __init__(self, from_revision_id: _Optional[str] = ..., to_revision_id: _Optional[str] = ..., event_id: _Optional[str] = ..., position: _Optional[int] = ..., published: _Optional[bool] = ..., json: _Optional[str] = ...) -> None: ...

class ForgetRequest(_message.Message):
    __slots__ = ("tenant_id", "user_id", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    reason: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ForgetResponse(_message.Message):
    __slots__ = ("tombstone_event_id", "position", "forgotten_revision_ids", "deleted_digests", "published", "json")
    TOMBSTONE_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    FORGOTTEN_REVISION_IDS_FIELD_NUMBER: _ClassVar[int]
    DELETED_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    tombstone_event_id: str
    position: int
    forgotten_revision_ids: _containers.RepeatedScalarFieldContainer[str]
    deleted_digests: _containers.RepeatedScalarFieldContainer[str]
    published: bool
    json: str
    def __init__(self, tombstone_event_id: _Optional[str] = ..., position: _Optional[int] = ..., forgotten_revision_ids: _Optional[_Iterable[str]] = ..., deleted_digests: _Optional[_Iterable[str]] = ..., published: _Optional[bool] = ..., json: _Optional[str] = ...) -> None: ...

class TrainingRevision(_message.Message):
    __slots__ = ("revision_id", "tenant_id", "user_id", "kind", "state", "served", "parent_revision_id", "trigger", "origin_json", "adapter_digest", "metrics", "reasons", "json")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    PARENT_REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_JSON_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_DIGEST_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    revision_id: str
    tenant_id: str
    user_id: str
    kind: str
    state: str
    served: bool
    parent_revision_id: str
    trigger: str
    origin_json: str
    adapter_digest: str
    metrics: _containers.ScalarMap[str, float]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    json: str
    def __init__(self, revision_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., served: _Optional[bool] = ..., parent_revision_id: _Optional[str] = ..., trigger: _Optional[str] = ..., origin_json: _Optional[str] = ..., adapter_digest: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., reasons: _Optional[_Iterable[str]] = ..., json: _Optional[str] = ...) -> None: ...

class TrainingRevisionRef(_message.Message):
    __slots__ = ("tenant_id", "user_id", "revision_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    revision_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., revision_id: _Optional[str] = ...) -> None: ...

class TrainingRevisionList(_message.Message):
    __slots__ = ("tenant_id", "user_id", "served_revision_id", "revisions", "json")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVED_REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    served_revision_id: str
    revisions: _containers.RepeatedCompositeFieldContainer[TrainingRevision]
    json: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., served_revision_id: _Optional[str] = ..., revisions: _Optional[_Iterable[_Union[TrainingRevision, _Mapping]]] = ..., json: _Optional[str] = ...) -> None: ...

class RevisionRequested(_message.Message):
    __slots__ = ("tenant_id", "user_id", "up_to_position", "json", "revision_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    UP_TO_POSITION_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    REVISION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    up_to_position: int
    json: str
    revision_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., up_to_position: _Optional[int] = ..., json: _Optional[str] = ..., revision_id: _Optional[str] = ...) -> None: ...
