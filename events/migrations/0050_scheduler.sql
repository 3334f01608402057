-- The training scheduler's own state (workers/scheduler.py). Not a projection: nothing
-- here is derived from the log, so it is not rebuilt by replay.

-- One row per scheduled job: the latest cron slot that has been claimed. A run claims a
-- slot with a conditional UPDATE, so a slot runs once even with several schedulers or
-- after a restart, and slots missed while down collapse into one run (coalesced).
CREATE TABLE scheduler_runs (
    job          text        PRIMARY KEY,
    last_slot    timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    requested    integer     NOT NULL DEFAULT 0
);

-- Every training request the scheduler (or `tessera train`) sent, so that the threshold
-- trigger does not ask twice for the same new events.
CREATE TABLE scheduler_requests (
    tenant_id       text        NOT NULL,
    user_id         text        NOT NULL,
    up_to_position  bigint      NOT NULL,
    trigger         text        NOT NULL,
    requested_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id, up_to_position)
);
