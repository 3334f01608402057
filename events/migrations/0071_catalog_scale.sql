-- Found by `tessera bench catalog` (issue #17): what a catalog of a million users needs.

-- Forgetting a user deletes the adapter blobs no live revision still names; the check
-- ("does any other revision use this digest?") was a sequential scan of every revision,
-- about 2.5 s per forget at a million users (two million revisions), all of it under the
-- log's append lock. With the index it is one probe per digest.
CREATE INDEX revisions_adapter_digest_idx ON revisions (adapter_digest);

-- The nightly planning scan (workers/scheduler_state.py) takes each stream's last
-- revision end, max(dataset_to), over every revision. Without this index that is a
-- sequential scan of the whole catalog (wide rows: provenance and metrics), repeated by
-- each parallel worker; with it, an index-only scan: at 100k users 0.9 s -> 0.06 s.
CREATE INDEX revisions_stream_dataset_idx ON revisions (tenant_id, user_id, dataset_to);
