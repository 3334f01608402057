"""Build real histories for the audit tests without training: interactions carrying
unique marker strings, and revisions recorded with the events the pipeline appends and
small but real safetensors adapter blobs (for the tiny test model's shapes) in a real
`LocalAdapterStore`."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kafka import KafkaConsumer, TopicPartition

from tessera.events.postgres_store import PostgresEventStore
from tessera.events.store import StoredEvent
from tessera.schemas.events import PRIOR_USER_ID, EventEnvelope, EventType, utcnow
from tessera.schemas.revisions import (
    RevisionEvaluated,
    RevisionPromoted,
    RevisionRejected,
    RevisionTrained,
)
from tessera.workers.adapter_store import AdapterBlobConfig, LocalAdapterStore, save_adapter_blob

# The tiny test model (bench/tiny_model.py defaults): hidden 64, 4 heads, 2 KV heads.
HIDDEN, KV_OUT, LAYERS, RANK = 64, 32, 2, 4
TARGETS = ["q_proj", "v_proj"]


def marker(tag: str) -> str:
    """A string that appears nowhere unless we wrote it."""
    return f"MARK{tag}{uuid.uuid4().hex[:12]}"


def interactions(
    store: PostgresEventStore, tenant: str, user: str, texts: list[str]
) -> list[StoredEvent]:
    """One exchange, one text and one feedback per entry of `texts`, all carrying it."""
    events: list[EventEnvelope] = []
    for text in texts:
        exchange = EventEnvelope(
            event_type=EventType.EXCHANGE,
            tenant_id=tenant,
            user_id=user,
            occurred_at=utcnow(),
            data={"prompt": f"question {text}", "response": f"answer {text}", "context": []},
        )
        events.append(exchange)
        events.append(
            EventEnvelope(
                event_type=EventType.TEXT,
                tenant_id=tenant,
                user_id=user,
                occurred_at=utcnow(),
                data={"text": f"note {text}", "context": [{"role": "user", "text": text}]},
            )
        )
        events.append(
            EventEnvelope(
                event_type=EventType.FEEDBACK,
                tenant_id=tenant,
                user_id=user,
                occurred_at=utcnow(),
                data={"target_event_id": str(exchange.event_id), "rating": 4,
                      "edited_response": f"better {text}"},
            )
        )
    return store.append(events)


def adapter_blob(adapters: LocalAdapterStore, seed: int) -> str:
    """A real Tessera adapter blob for the tiny model, stored; returns its digest."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for layer in range(LAYERS):
        for target, out in (("q_proj", HIDDEN), ("v_proj", KV_OUT)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(RANK, HIDDEN, generator=gen) * 0.1
            state[f"{prefix}.lora_B.weight"] = torch.randn(out, RANK, generator=gen) * 0.1
    cfg = AdapterBlobConfig(r=RANK, lora_alpha=8.0, target_modules=tuple(TARGETS),
                            base_digest="tiny")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob.safetensors"
        save_adapter_blob(state, cfg, path)
        return adapters.put_file(path)


@dataclass(frozen=True)
class Rev:
    revision_id: str
    digest: str


def revision(
    store: PostgresEventStore,
    adapters: LocalAdapterStore,
    tenant: str,
    user: str,
    *,
    parent: str | None,
    outcome: str = "promoted",
    user_nll: float = 2.0,
    baseline_nll: float = 2.5,
    seed: int | None = None,
    digest: str | None = None,
    trigger: str = "test",
) -> Rev:
    """Record trained + evaluated + promoted/rejected (or only trained) for a revision
    over the user's events so far, with a real blob (or the given `digest`)."""
    rid = f"rev-{uuid.uuid4().hex[:10]}"
    digest = digest or adapter_blob(adapters, seed if seed is not None else hash(rid) % 10_000)
    to = store.head_position()
    head = store.get_head(tenant, user)

    def env(kind: EventType, payload: Any) -> EventEnvelope:
        return EventEnvelope(event_type=kind, tenant_id=tenant, user_id=user,
                             occurred_at=utcnow(), data=payload.model_dump(mode="json"))

    events = [env(EventType.REVISION_TRAINED, RevisionTrained(
        revision_id=rid, kind="prior" if user == PRIOR_USER_ID else "personal",
        parent_revision_id=parent, base_model_id="tiny",
        base_digest="b" * 64, adapter_digest=digest, adapter_bytes=1000, rank=RANK,
        alpha=8.0, target_modules=TARGETS, hyperparameters={"train": {"lr": 1e-3}},
        # After the user's last forget: the log refuses a dataset reaching before it.
        seed=7, dataset_from=store.last_forgotten_position(tenant, user) + 1, dataset_to=to,
        dataset_digest="d" * 64,
        heldout_positions=[to], code_version="git:test", trigger=trigger, train_seconds=0.5,
    ))]
    if outcome != "trained":
        events.append(env(EventType.REVISION_EVALUATED, RevisionEvaluated(
            revision_id=rid, metrics={"user_nll": user_nll, "user_gain": baseline_nll - user_nll},
            baseline_revision_id=head.revision_id if head else None,
            baseline_metrics={"user_nll": baseline_nll},
        )))
    if outcome == "promoted":
        events.append(env(EventType.REVISION_PROMOTED, RevisionPromoted(
            revision_id=rid, adapter_digest=digest, reasons=["user_nll improved"],
            previous_revision_id=head.revision_id if head else None,
        )))
    elif outcome == "rejected":
        events.append(env(EventType.REVISION_REJECTED, RevisionRejected(
            revision_id=rid, reasons=["user_nll did not improve"])))
    store.append(events)
    return Rev(rid, digest)


class TopicReader:
    """Reads every record of one topic from the beginning (no group: no joins)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                       enable_auto_commit=False)
        deadline = time.monotonic() + 30
        parts = self._consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = self._consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)
        self.records: list[tuple[str, dict[str, Any]]] = []

    def wait_for(self, count: int, timeout_s: float = 15.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count and time.monotonic() < deadline:
            for batch in self._consumer.poll(timeout_ms=200).values():
                for rec in batch:
                    self.records.append((rec.key.decode(), json.loads(rec.value)))
        return self.records

    def close(self) -> None:
        self._consumer.close()
