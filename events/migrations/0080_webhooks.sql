-- Webhooks (events/webhooks.py, services/webhooks/): one endpoint per tenant, the log of
-- every delivery attempt, and how far the dispatcher has read the event log.
-- The secret is kept as given: it is the HMAC key the dispatcher signs with, so it
-- cannot be stored as a hash the way API keys are.
CREATE TABLE webhooks (
    tenant_id   text PRIMARY KEY,
    url         text NOT NULL CHECK (url ~ '^https?://'),
    secret      text NOT NULL CHECK (length(secret) >= 16),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL,
    event_id      uuid NOT NULL,
    event_type    text NOT NULL,
    position      bigint NOT NULL,
    url           text NOT NULL,
    attempt       integer NOT NULL CHECK (attempt >= 1),
    status_code   integer,
    error         text,
    ok            boolean NOT NULL,
    attempted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_by_tenant ON webhook_deliveries (tenant_id, id DESC);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_cursors (
    consumer    text PRIMARY KEY,
    position    bigint NOT NULL CHECK (position >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
