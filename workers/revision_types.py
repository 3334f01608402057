"""The revision pipeline's shared vocabulary: config, plan, outcome, and what it needs.

A low module (it imports no other pipeline stage), so the stages (revision_plan,
revision_train, revision_eval, revision_decide), the tenant prior, the stale-head sweep
and the history check all speak the same types without importing workers/pipeline.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tessera.events.projections import HeadRow, RevisionRow, UserRow
from tessera.events.store import StoredEvent
from tessera.schemas.events import INTERACTION_TYPES, EventEnvelope
from tessera.workers.adapter_store import AdapterStore
from tessera.workers.base_model import BaseModelInfo
from tessera.workers.dataset import Example
from tessera.workers.evaluator import MetricsCache
from tessera.workers.gate import GateConfig
from tessera.workers.lora_config import SHAPE_FIELDS, LoraTrainConfig
from tessera.workers.training_request import TrainingRequest

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

INTERACTIONS = sorted(str(t) for t in INTERACTION_TYPES)
DECIDED_STATES = frozenset({"promoted", "rejected", "superseded", "rolled_back", "forgotten"})
Outcome = Literal["promoted", "rejected", "skipped"]
Publish = Callable[[EventEnvelope], None]


class RevisionLog(Protocol):
    """What the pipeline needs from the event store (both stores provide it)."""

    def append(self, events: Sequence[EventEnvelope]) -> list[StoredEvent]: ...

    def read(
        self,
        *,
        after: int = 0,
        upto: int | None = None,
        tenant_id: str | None = None,
        user_id: str | None = None,
        event_types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]: ...

    def get_head(self, tenant_id: str, user_id: str) -> HeadRow | None: ...

    def get_revision(self, revision_id: str) -> RevisionRow | None: ...

    def list_revisions(self, tenant_id: str, user_id: str) -> list[RevisionRow]: ...

    def list_users(self, tenant_id: str) -> list[UserRow]: ...

    def last_forgotten_position(self, tenant_id: str, user_id: str) -> int: ...


@dataclass(frozen=True)
class PipelineConfig:
    train: LoraTrainConfig = field(default_factory=LoraTrainConfig)  # the tenant prior's
    # Applied on top of `train` for personal revisions (`personal_train`); shape fields
    # (rank, alpha, targets) may not differ: a personal chain warm-starts from the prior.
    # Empty here (library callers and tests: personal = prior config); the service ships
    # `lora_config.PERSONAL_DEFAULTS` through `TESSERA_PERSONAL_TRAIN_OVERRIDES`.
    personal_overrides: dict[str, Any] = field(default_factory=dict)
    gate: GateConfig = field(default_factory=GateConfig)
    seed: int = 1234
    holdout_k: int = 8
    min_train_examples: int = 8
    prior_max_events_per_user: int = 200
    prior_max_events: int = 4000
    prior_eval_users: int = 8
    regression_version: str = "regression-v1"
    eval_max_length: int = 256
    canaries: bool = True
    progress: bool = False  # tqdm bar during training (CLI)
    history_max: int = 32  # earlier held-out examples a candidate must not get worse on
    history_tolerance: float = 0.01  # relative NLL rise allowed on them

    def __post_init__(self) -> None:
        shape = sorted(set(self.personal_overrides) & set(SHAPE_FIELDS))
        if shape:
            raise ValueError(
                f"personal training overrides may not change {', '.join(shape)}: a personal "
                f"revision is warm-started from the tenant prior and must keep its shape")
        _ = self.personal_train  # validate the overrides now, not at the first personal night

    @property
    def personal_train(self) -> LoraTrainConfig:
        """How personal revisions are trained: `train` with `personal_overrides`."""
        return self.train.with_overrides(self.personal_overrides)

    def train_config(self, kind: Literal["personal", "prior"]) -> LoraTrainConfig:
        """The training config of a revision of `kind`."""
        return self.personal_train if kind == "personal" else self.train


@dataclass
class Engine:
    """The loaded, frozen base model a worker keeps for all its revisions."""

    base: BaseModelInfo
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


class RevisionWorker(Protocol):
    """What the post-promotion sweep (workers/stale_heads.py) needs of a worker: its
    store, blobs, model, knobs and figure cache. `RevisionPipeline` provides it."""

    @property
    def store(self) -> RevisionLog: ...

    @property
    def adapters(self) -> AdapterStore: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def config(self) -> PipelineConfig: ...

    @property
    def metrics_cache(self) -> MetricsCache: ...


@dataclass(frozen=True)
class RevisionPlan:
    """Everything that determines a candidate: what to train on, from what, for whom."""

    tenant_id: str
    user_id: str
    kind: Literal["personal", "prior"]
    revision_id: str
    up_to_position: int
    trigger: str
    parent: RevisionRow | None  # warm start (None: from the base model)
    baseline: RevisionRow | None  # what the user/tenant is served now (None: base model)
    dataset_from: int  # first position the dataset may contain (after + 1)
    dataset_to: int
    dataset_digest: str
    train: tuple[Example, ...]
    heldout: tuple[Example, ...]
    dataset_params: dict[str, Any]  # how to rebuild the dataset from the log
    history: tuple[Example, ...] = ()  # the user's earlier held-out examples (gate only)
    # A rebase: the new prior, gated against too (the better of it and `baseline` wins).
    rival: RevisionRow | None = None
    dataset_seconds: float = 0.0  # time spent reading events and building the dataset


@dataclass(frozen=True)
class RevisionOutcome:
    outcome: Outcome
    revision_id: str | None
    reasons: list[str]
    tenant_id: str = ""
    user_id: str = ""
    adapter_digest: str | None = None
    adapter_bytes: int = 0
    parent_revision_id: str | None = None
    baseline_revision_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # dataset/train/evaluate/store


def skipped(
    request: TrainingRequest, reason: str, revision_id: str | None = None
) -> RevisionOutcome:
    """An outcome that records nothing: the request needs no new revision."""
    return RevisionOutcome(
        "skipped", revision_id, [reason], tenant_id=request.tenant_id, user_id=request.user_id
    )
