-- Per-tenant quota overrides (services/quotas.py): NULL means the server's default
-- (TESSERA_QUOTA_*), 0 means no limit.
ALTER TABLE tenants
    ADD COLUMN ingest_events_per_s      double precision CHECK (ingest_events_per_s >= 0),
    ADD COLUMN inference_requests_per_s double precision CHECK (inference_requests_per_s >= 0),
    ADD COLUMN inference_tokens_per_s   double precision CHECK (inference_tokens_per_s >= 0);
