"""Logs of every Tessera process: plain text, or one JSON object per line
(`TESSERA_JSON_LOGS=1`, python-json-logger), with the ids of the work in hand.

Ids travel in a context variable (`log_context`), so a line logged anywhere while a
request or revision is being handled carries them without being passed down: the HTTP
layer binds `request_id` (services/observability/http_metrics.py), the trainer passes
`user_id`/`revision_id` as `extra=`. Both become top-level JSON fields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, TextIO

from pythonjsonlogger.json import JsonFormatter

_CONTEXT: ContextVar[dict[str, str]] = ContextVar("tessera_log_context", default={})  # noqa: B039
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
# kafka-python logs every connection step at INFO, APScheduler every poll of the threshold
# trigger (our own lines say what it did): their warnings and errors only.
QUIETED: Final = ("kafka", "apscheduler.executors")


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Every record logged inside carries `ids` (None values are left out)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**ids: str) -> None:
    """Add ids to the current context (e.g. the revision, once it is known)."""
    _CONTEXT.set({**_CONTEXT.get(), **ids})


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (a handler filter: also for library loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def json_formatter() -> logging.Formatter:
    """time, level, logger, message, and every `extra`/context field."""
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"},
    )


def make_handler(json_logs: bool = True, stream: TextIO | None = None) -> logging.Handler:
    """A stderr (or `stream`) handler, JSON lines unless `json_logs` is false, with the
    context ids."""
    handler: logging.Handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter() if json_logs else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    return handler


def logging_dict(*, json_logs: bool, level: int | str = logging.INFO) -> dict[str, Any]:
    """The same set-up as a `logging.config.dictConfig` dict, for frameworks that configure
    logging themselves when they start (faust's Worker takes `logging_config`)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"default": {"()": f"{__name__}.make_handler", "json_logs": json_logs}},
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {name: {"level": "WARNING"} for name in QUIETED},
    }


def configure_logging(
    *, json_logs: bool = True, level: int | str = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Route the root logger to stderr (or `stream`), as JSON lines unless `json_logs` is
    false; returns the handler."""
    handler = make_handler(json_logs, stream)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIETED:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
    return handler
