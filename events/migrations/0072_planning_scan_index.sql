-- Found by `tessera bench catalog` (issue #17). The nightly planning scan
-- (workers/scheduler_state.py) takes each stream's last revision end, max(dataset_to),
-- over every revision. Without this index that is a sequential scan of the whole catalog
-- (wide rows: provenance and metrics), repeated by each parallel worker; with it, an
-- index-only scan: at 100k users 0.9 s -> 0.06 s.
CREATE INDEX revisions_stream_dataset_idx ON revisions (tenant_id, user_id, dataset_to);
