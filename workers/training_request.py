"""The message on `tessera.training-requests`: which user to train, up to which position.

Producers (the scheduler, `tessera train USER`) and the trainer worker share this one
model, so the wire format lives in one place.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tessera.schemas.events import utcnow

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


