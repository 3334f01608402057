"""The messages on `tessera.training-requests`: which user to train, up to which position
(`TrainingRequest`), or which users to train together in one batched pass (`TrainingGroup`,
sent by the nightly job when `TESSERA_NIGHT_GROUP_SIZE` > 1).

Producers (the scheduler, `tessera train USER`) and the trainer worker share these
models, so the wire format lives in one place.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from tessera.schemas.events import PRIOR_USER_ID, utcnow

Trigger = Literal["nightly", "threshold", "manual", "demo", "bench", "test", "import"]


class AdapterImport(BaseModel):
    """An adapter brought in from outside (workers/adapter_import.py): already checked to
    fit and put in the adapter store; the worker gates it instead of training one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="Blob in the store")
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                               description="sha256 of adapter_model.safetensors as given")
    source: str = Field(min_length=1, max_length=200, description="e.g. cli, http")
    actor: str = Field(min_length=1, max_length=200, description="Who imported it")


class TrainingRequest(BaseModel):
    """Train one revision of `user_id` on its events up to log position `up_to_position`.

    `user_id` may be `PRIOR_USER_ID` ("~prior"): then the tenant prior is trained. A
    request for a `(user, up_to_position)` that already has a revision is a no-op, so
    redelivered or duplicated requests are harmless."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=128)
    up_to_position: int = Field(ge=0)
    trigger: Trigger = "manual"
    requested_at: AwareDatetime = Field(default_factory=utcnow)
    # Set: gate this imported adapter (up to `up_to_position` of the user's events)
    # instead of training a revision.
    adapter_import: AdapterImport | None = None

    @property
    def key(self) -> bytes:
        """Kafka key `tenant/user`: one user's requests stay in one partition, in order."""
        return f"{self.tenant_id}/{self.user_id}".encode()

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes) -> TrainingRequest:
        """Parse a record value; raises `pydantic.ValidationError` on malformed input."""
        return cls.model_validate_json(raw)


class TrainingGroup(BaseModel):
    """Train these users' revisions together (workers/group_night.py): one tenant, one
    prior and training config, each member exactly the request it would be alone. The
    group is delivered, retried and committed as one message; each member stays
    idempotent on its own `(user, up_to_position)`, so a redelivered group trains only
    the members without a decided or recorded revision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: str = Field(pattern=r"^grp-[0-9a-f]{16}$")
    members: tuple[TrainingRequest, ...] = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_tenant_personal_users(self) -> TrainingGroup:
        tenants = {m.tenant_id for m in self.members}
        if len(tenants) != 1:
            raise ValueError(f"a group holds one tenant's users, not {sorted(tenants)}")
        users = [m.user_id for m in self.members]
        if len(set(users)) != len(users):
            raise ValueError("a user appears twice in the group")
        if PRIOR_USER_ID in users or any(m.adapter_import for m in self.members):
            raise ValueError("a group holds personal training requests only")
        return self

    @classmethod
    def of(cls, members: list[TrainingRequest]) -> TrainingGroup:
        """A group with its id derived from the members (a re-sent group keeps its id)."""
        key = ",".join(f"{m.tenant_id}/{m.user_id}/{m.up_to_position}" for m in members)
        return cls(group_id=f"grp-{hashlib.sha256(key.encode()).hexdigest()[:16]}",
                   members=tuple(members))

    @property
    def tenant_id(self) -> str:
        return self.members[0].tenant_id

    @property
    def key(self) -> bytes:
        """Kafka key `tenant/group id`: groups spread over the trainers' partitions."""
        return f"{self.tenant_id}/{self.group_id}".encode()

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


TrainingMessage = TrainingRequest | TrainingGroup
_MESSAGE: TypeAdapter[TrainingMessage] = TypeAdapter(TrainingMessage)


def decode_message(raw: bytes) -> TrainingMessage:
    """Parse a record value as either message (their fields do not overlap); raises
    `pydantic.ValidationError` on malformed input."""
    return _MESSAGE.validate_json(raw)
