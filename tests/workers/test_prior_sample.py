"""The prior's sample leaves out what personal gates judge on (in-memory log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tessera.events.memory_store import MemoryEventStore
from tessera.workers.adapter_store import sha256_file
from tessera.workers.dataset import Example
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.prior import PriorSample, sample_prior_dataset
from tessera.workers.trainer import train_adapter
from tests.events.factories import exchange

TENANT = "acme"


def _store(per_user: int = 10) -> MemoryEventStore:
    store = MemoryEventStore()
    for n in range(per_user):
        store.append([exchange(TENANT, "alice", n), exchange(TENANT, "bob", n)])
    return store


def _positions(store: MemoryEventStore, user: str) -> list[int]:
    return [e.position for e in store.read(tenant_id=TENANT, user_id=user)]


def test_every_users_last_examples_and_heads_heldout_are_never_trained_on() -> None:
    store = _store()
    alice, bob = _positions(store, "alice"), _positions(store, "bob")
    head_heldout = alice[3:5]  # what alice's current head was judged on
    sample = sample_prior_dataset(
        store, TENANT, store.head_position(), max_per_user=100, max_events=1000,
        eval_users=1, holdout_k=3, exclude_positions={"alice": head_heldout},
    )
    trained = {e.position for e in sample.train}
    # Nobody's last 3 (their next personal gate's held-out set) nor alice's head's.
    assert trained == set(alice[:3] + alice[5:7] + bob[:7])
    # The evaluator's reserved examples are the prior's own held-out set.
    assert len(sample.heldout) == 3
    assert {e.position for e in sample.heldout} <= set(alice[7:] + bob[7:])
    assert sample.params["excluded_positions"] == {"alice": head_heldout}


def test_a_recorded_prior_from_before_rebuilds_as_it_was_sampled() -> None:
    store = _store()
    old = sample_prior_dataset(store, TENANT, store.head_position(), max_per_user=100,
                               max_events=1000, eval_users=1, holdout_k=3,
                               personal_holdout=False)
    # Only the evaluator held out then: the other user's last examples were trained on.
    assert len(old.train) == 17 and len(old.heldout) == 3
    assert old.params["personal_holdout"] is False


def _interleaved(alice_first: bool) -> MemoryEventStore:
    """The same per-user streams, interleaved in the log as two partitions might."""
    store = MemoryEventStore()
    for n in range(10):
        pair = [exchange(TENANT, "alice", n), exchange(TENANT, "bob", n)]
        store.append(pair if alice_first or n % 3 else pair[::-1])
    return store


def _texts(examples: tuple[Example, ...]) -> list[str]:
    return [f"{e.messages} -> {e.target}" for e in examples]


def test_the_same_streams_interleaved_otherwise_give_the_same_training_order() -> None:
    def sample(store: MemoryEventStore, order: str) -> PriorSample:
        return sample_prior_dataset(store, TENANT, store.head_position(), max_per_user=100,
                                    max_events=1000, eval_users=2, holdout_k=2, order=order)

    one, other = _interleaved(True), _interleaved(False)
    assert _texts(sample(one, "user").train) == _texts(sample(other, "user").train)
    assert _texts(sample(one, "user").heldout) == _texts(sample(other, "user").heldout)
    assert sample(one, "user").params["order"] == "user"
    # log order, what priors recorded before the change were trained in, differs
    assert _texts(sample(one, "position").train) != _texts(sample(other, "position").train)
    assert "order" not in sample(one, "position").params


def test_the_same_streams_interleaved_otherwise_train_the_same_prior(
    tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    model, tokenizer = tiny
    config = LoraTrainConfig(rank=2, alpha=4, lr=5e-3, epochs=1, batch_size=4, max_length=32,
                             dropout=0.0)
    digests = []
    for n, store in enumerate((_interleaved(True), _interleaved(False))):
        sample = sample_prior_dataset(store, TENANT, store.head_position(), max_per_user=100,
                                      max_events=1000, eval_users=2, holdout_k=2)
        result = train_adapter(model, tokenizer, sample.train, config=config,
                               base_digest="0" * 64, out_dir=tmp_path / str(n), seed=3)
        digests.append(sha256_file(result.blob_path))
    assert digests[0] == digests[1]
