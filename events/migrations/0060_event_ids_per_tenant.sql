-- Idempotency is per tenant: an event id is unique within its tenant, not across all of
-- them. With one global key, a tenant that sent an id another tenant had already used
-- (by chance, or on purpose after seeing it) got 202 and its event was silently skipped
-- as a "replay"; worse, sending it first made the other tenant's event the one dropped.
-- The new key's index also serves every lookup by id, which is always within a tenant.

ALTER TABLE events DROP CONSTRAINT events_event_id_key;
ALTER TABLE events ADD CONSTRAINT events_tenant_event_id_key UNIQUE (tenant_id, event_id);
