-- Projections: derived from the log by events/projections.py::apply_event, updated in
-- the append transaction and rebuildable by replaying the log (so no foreign keys to
-- events and nothing here that the log does not say).

CREATE TABLE users (
    tenant_id                 text        NOT NULL,
    user_id                   text        NOT NULL,
    interactions              bigint      NOT NULL DEFAULT 0,  -- since the last forget
    first_position            bigint,                          -- since the last forget
    last_position             bigint,
    last_occurred_at          timestamptz,
    forgotten_at              timestamptz,
    forgotten_position        bigint,
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE revisions (
    revision_id         text        PRIMARY KEY,
    tenant_id           text        NOT NULL,
    user_id             text        NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('personal', 'prior')),
    parent_revision_id  text,
    state               text        NOT NULL,
    base_model_id       text        NOT NULL,
    base_digest         text        NOT NULL,
    adapter_digest      text        NOT NULL,
    dataset_from        bigint      NOT NULL,
    dataset_to          bigint      NOT NULL,
    dataset_digest      text        NOT NULL,
    metrics             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    baseline_revision_id text,
    baseline_metrics    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    reasons             jsonb       NOT NULL DEFAULT '[]'::jsonb,
    provenance          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    trained_at          timestamptz NOT NULL,
    evaluated_at        timestamptz,
    decided_at          timestamptz,
    updated_at          timestamptz NOT NULL,
    trained_position    bigint      NOT NULL,
    position            bigint      NOT NULL  -- of the last event that changed this row
);

CREATE INDEX revisions_user_idx ON revisions (tenant_id, user_id, trained_position);

-- What each stream serves now (personal user or the tenant prior, "~prior").
CREATE TABLE heads (
    tenant_id       text        NOT NULL,
    user_id         text        NOT NULL,
    revision_id     text        NOT NULL,
    adapter_digest  text        NOT NULL,
    position        bigint      NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
