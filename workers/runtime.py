"""Assemble a revision pipeline from settings: store, adapter store, base model, Kafka.

Used by `tessera worker train`, `tessera train --local`, the demo and the benchmark, so
they all train with the same configuration (`TESSERA_*` settings).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from tessera.schemas.events import EventEnvelope
from tessera.schemas.settings import Settings
from tessera.workers.gate import GateConfig
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.pipeline import Engine, PipelineConfig, RevisionPipeline

log = logging.getLogger(__name__)


class KafkaPublisher:
    """Publishes revision decisions on `tessera.revisions`, keyed `tenant/user`, and waits
    for the broker's acknowledgement (the caller has committed to PostgreSQL already)."""

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> None:
        from tessera.events.kafka import make_producer

        self._producer = make_producer(bootstrap, client_id="tessera-trainer")
        self._topic = topic
        self._timeout_s = timeout_s

    def __call__(self, envelope: EventEnvelope) -> None:
        from kafka.errors import KafkaError

        from tessera.events.kafka import encode_envelope, stream_key

        try:
            self._producer.send(
                self._topic, key=stream_key(envelope), value=encode_envelope(envelope)
            ).get(timeout=self._timeout_s)
        except KafkaError as exc:
            # The decision is in PostgreSQL, the source of truth; serving also follows the
            # heads projection, so a lost announcement delays a swap, it loses nothing.
            log.error("could not publish %s on %s: %s", envelope.event_type, self._topic, exc,
                      extra={"user_id": envelope.user_id})

    def close(self) -> None:
        self._producer.close()


def pipeline_config(settings: Settings, *, progress: bool = False) -> PipelineConfig:
    """The pipeline's knobs from settings (`TESSERA_TRAIN_OVERRIDES` etc.)."""
    return PipelineConfig(
        train=LoraTrainConfig.model_validate(settings.train_overrides),
        personal_overrides=dict(settings.personal_train_overrides),
        gate=GateConfig.model_validate(settings.gate_overrides),
        seed=settings.train_seed,
        holdout_k=settings.holdout_k,
        min_train_examples=settings.min_train_examples,
        prior_max_events_per_user=settings.prior_max_events_per_user,
        prior_max_events=settings.prior_max_events,
        prior_eval_users=settings.prior_eval_users,
        progress=progress,
    )


def load_engine(settings: Settings) -> Engine:
    """Resolve (converting once if needed) and load the base model."""
    from tessera.workers.base_model import load_base_model, resolve_base_model

    info = resolve_base_model(settings)
    model, tokenizer = load_base_model(info)
    return Engine(info, model, tokenizer)


@contextmanager
def open_pipeline(
    settings: Settings,
    *,
    database_url: str,
    bootstrap: str | None,
    progress: bool = False,
    engine: Engine | None = None,
) -> Iterator[RevisionPipeline]:
    """A ready pipeline on PostgreSQL, the adapter store of `settings.state_dir` and (when
    `bootstrap` is given) a publisher to `tessera.revisions`; closed on exit."""
    from tessera.events.postgres_store import PostgresEventStore
    from tessera.workers.adapter_store import LocalAdapterStore

    store = PostgresEventStore(database_url)
    publisher = KafkaPublisher(bootstrap, settings.topic_revisions) if bootstrap else None
    try:
        yield RevisionPipeline(
            store,
            LocalAdapterStore(settings.adapter_store_dir),
            engine or load_engine(settings),
            pipeline_config(settings, progress=progress),
            publish=publisher,
        )
    finally:
        if publisher is not None:
            publisher.close()
        store.close()
