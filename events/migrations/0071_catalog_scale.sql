-- Found by `tessera bench catalog` (issue #17): what a catalog of a million users needs.

-- Forgetting a user deletes the adapter blobs no live revision still names; the check
-- ("does any other revision use this digest?") was a sequential scan of every revision,
-- about 2.5 s per forget at a million users (two million revisions), all of it under the
-- log's append lock. With the index it is one probe per digest.
CREATE INDEX revisions_adapter_digest_idx ON revisions (adapter_digest);
