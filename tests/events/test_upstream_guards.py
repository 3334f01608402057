"""The faust and aiokafka code our patches replace, copy or lean on has not changed.

faust-streaming and aiokafka are pinned exactly in pyproject.toml because events/ replaces
private parts of them. Each entry below is the sha256 of `inspect.getsource` of one
upstream function as installed at the pin. When an upgrade changes one, this test fails:
read the upstream change, adapt the patch (or drop it, if upstream now does what it
does), then record the new hash. Each comment says what breaks if the entry changes.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

PINS = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}

GUARDED: dict[str, str] = {
    # events/faust_bulk_drain.py: BulkDrainConsumer._drain_messages is a copy of this loop
    # (read offsets, gaps, acks, commit cadence); a change upstream is missed by the copy.
    "faust.transport.consumer:Consumer._drain_messages":
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    # events/faust_fetch_wait.py wraps this and overrides the `fetch_max_wait_ms=1500` it
    # passes; if it stops returning the aiokafka consumer (or makes the wait a setting,
    # and the patch can go), the wrapper is wrong or useless.
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._create_worker_consumer":
        "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7",
    # events/faust_fetch_wait.py sets the private `_fetch_max_wait_ms`, read here when the
    # fetcher starts; read elsewhere (or renamed), the setting silently does nothing.
    "aiokafka.consumer.consumer:AIOKafkaConsumer.start":
        "2f1ba70443327538800d348e61042cdedd5a5e6306f40ebe1a06dddba7494c45",
    # events/kafka_no_autocreate.py subclasses MetadataRequest with this signature and
    # relies on None meaning "auto-create": a new signature or default breaks the subclass
    # or makes it unnecessary.
    "aiokafka.protocol.metadata:MetadataRequest.__init__":
        "1c8b3799440259612ef5d0a80a7b40fa495b8a1e9d14203baf721aa2cc588f54",
    "aiokafka.protocol.metadata:MetadataRequest.build":
        "e355bb17a7c0f2a86d993c413b29d963e0e61e2299554846bcc15c61d932d2b2",
    # events/kafka_no_autocreate.py replaces the module name `aiokafka.client.
    # MetadataRequest`, which these two build their requests from; built any other way,
    # missing topics are auto-created again (the soak's overlapping batches).
    "aiokafka.client:AIOKafkaClient.bootstrap":
        "198943b004e55849c35b7d1f3dc7505b59ddff73e97cc214e171d21fb91d2822",
    "aiokafka.client:AIOKafkaClient._metadata_update":
        "06dc51ed3e0d38b8d64100fd59012f399b2235c2f4804dfd142fcec397412fda",
    # events/kafka_publisher.py wraps the client's `_on_connection_closed`, which
    # `_get_conn` hands to each new connection; changed, a broken connection no longer
    # retires the producer and aiokafka retries batches into a restarted broker.
    "aiokafka.client:AIOKafkaClient._on_connection_closed":
        "36f8c06a62fe343a37931d60230db17e53615ce50441c4eab6f8bff608e57e02",
    "aiokafka.client:AIOKafkaClient._get_conn":
        "68ce5d8391719d3334eeee4c7d374d6ebb7eda5e6d402b2ada8c99725acae711",
    # events/kafka_publisher.py `_retire` reads the producer's `_sender` and
    # `_message_accumulator`, the sender's `sender_task`, the accumulator's `_batches`,
    # `_pending_batches` and `fail_all`, and each batch's `_drain_waiter`; renamed or
    # reshaped, retiring fails (AttributeError) or leaves batches to be retried.
    "aiokafka.producer.producer:AIOKafkaProducer.__init__":
        "fd6f2966fb3dc883ffcd325fe27b2580f005c3246bec5f20fc8412b2134f6180",
    "aiokafka.producer.sender:Sender.start":
        "ef0a0cbbf1f69e7d67a73d34ab5b9175b0675bfd2c068a6ec09a04101b58f662",
    "aiokafka.producer.message_accumulator:MessageAccumulator.__init__":
        "eb57f3c1d5c7657b1fec503d4913013ac318547a9cc1e0daa17a37acbe28e94c",
    "aiokafka.producer.message_accumulator:MessageAccumulator.fail_all":
        "f1e12e8100bfcb8ca8790485bef52098d20d022c5520f915d8db2c889102312c",
    "aiokafka.producer.message_accumulator:MessageBatch.__init__":
        "6fd2fe1c2df19a7efe23a17a64e132aa1bea8a2f0a71a42b5342a670a5daec75",
}


# Where a patch installed in this process (by another test) replaced the attribute, it
# keeps the upstream original under this name.
_ORIGINAL_KEPT_AS = {"_create_worker_consumer": "_tessera_create"}


def _source_digest(target: str) -> str:
    module_name, qualname = target.split(":")
    owner: object = None
    obj: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        owner, obj = obj, getattr(obj, part)
        kept = _ORIGINAL_KEPT_AS.get(part)
        if kept is not None and hasattr(owner, kept):
            obj = getattr(owner, kept)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()  # type: ignore[arg-type]


@pytest.mark.parametrize("target", sorted(GUARDED))
def test_replaced_upstream_code_is_unchanged(target: str) -> None:
    assert _source_digest(target) == GUARDED[target], (
        f"{target} changed upstream: review the patch that depends on it (see the comment "
        f"in this file), then record the new hash")


@pytest.mark.parametrize("package", sorted(PINS))
def test_packages_are_pinned_and_installed_at_the_guarded_versions(package: str) -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert f"{package}=={PINS[package]}" in dependencies  # a range would let code drift
    assert version(package) == PINS[package]


def test_faust_aiokafka_consumer_inherits_the_copied_loop() -> None:
    # BulkDrainConsumer subclasses faust's aiokafka Consumer but copies the base loop: an
    # override in between would be skipped by our copy.
    from faust.transport.drivers.aiokafka import Consumer

    assert "_drain_messages" not in vars(Consumer)


# Each patch measured as still needed at the pins (drop the patch when one fails).


def test_aiokafka_still_asks_for_auto_creation_by_default() -> None:
    # events/kafka_no_autocreate.py exists because of this default.
    from aiokafka.protocol.metadata import MetadataRequest, MetadataRequest_v4

    struct = MetadataRequest(["tessera.interactions"]).build(MetadataRequest_v4)
    assert struct.allow_auto_topic_creation is True


def test_faust_still_fixes_the_worker_fetch_wait() -> None:
    # events/faust_fetch_wait.py exists because faust hard-codes this wait.
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = getattr(AIOKafkaConsumerThread, "_tessera_create",
                     AIOKafkaConsumerThread._create_worker_consumer)
    assert "fetch_max_wait_ms=1500" in inspect.getsource(create)


def test_aiokafka_client_still_has_no_public_connection_closed_hook() -> None:
    # events/kafka_publisher.py wraps the private callback for want of a public one.
    from aiokafka import AIOKafkaClient

    params = inspect.signature(AIOKafkaClient.__init__).parameters
    assert not any("close" in name for name in params)
