-- Tenants, their API keys (sha256 only, never the key) and the inference request audit.

CREATE TABLE tenants (
    tenant_id   text        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (tenant_id),
    key_sha256  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- Which revision answered which inference request (all requests or a sampled share).
CREATE TABLE request_log (
    request_id      text        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    user_id         text        NOT NULL,
    revision_id     text,
    adapter_digest  text,
    source          text        NOT NULL CHECK (source IN ('personal', 'prior', 'base')),
    at              timestamptz NOT NULL
);

CREATE INDEX request_log_user_idx ON request_log (tenant_id, user_id, at);
