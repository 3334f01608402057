-- The append-only event log, the consumers' Kafka positions and rejected input.

CREATE TABLE events (
    -- Global order of the log. Appends hold an EXCLUSIVE lock on this table, so positions
    -- become visible in increasing order and a reader tailing "position > last" never
    -- skips a row that commits later with a smaller position.
    position        bigserial PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    tenant_id       text        NOT NULL,
    user_id         text        NOT NULL,
    -- 1, 2, 3, ... per (tenant, user) stream; assigned by the store, never by callers.
    stream_version  bigint      NOT NULL CHECK (stream_version >= 1),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    causation_id    uuid,
    correlation_id  uuid,
    data            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Set when a forget erased `data`: the row stays so positions and versions never move.
    redacted_at     timestamptz,
    CONSTRAINT events_stream_version_key UNIQUE (tenant_id, user_id, stream_version)
);

CREATE INDEX events_type_position_idx ON events (event_type, position);

-- One row per (consumer group, topic, partition): the last offset whose effects are in
-- the log. Written in the same transaction as the events it produced.
CREATE TABLE tracking (
    consumer_group  text    NOT NULL,
    topic           text    NOT NULL,
    partition_no    integer NOT NULL,
    last_offset     bigint  NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition_no)
);

-- Input that could not become an event, with the reason: never lost silently.
CREATE TABLE rejected_inputs (
    id           bigserial   PRIMARY KEY,
    source       text        NOT NULL,
    reason       text        NOT NULL,
    payload      text        NOT NULL,
    received_at  timestamptz NOT NULL,
    -- Filled when the raw input named them, so that forgetting a user can find its rows.
    tenant_id    text,
    user_id      text
);

CREATE INDEX rejected_inputs_user_idx ON rejected_inputs (tenant_id, user_id);
