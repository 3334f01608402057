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
