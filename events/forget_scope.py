"""What forgetting a user reaches beyond their own interactions.

- Tenant priors trained on them: a prior's dataset names the users it sampled
  (`hyperparameters.dataset.users` of its `RevisionTrained`). The tombstone names those
  that can still be served (`retrain_prior_revision_ids`), and the next nightly run
  trains a new prior without the user first (workers/scheduler.py); until it is
  promoted, the current prior keeps serving what it learned.
- Gate reasons: they can quote generated text (a degenerate canary's repeated words),
  and a model trained on the user can reproduce the user's text. The reasons of the
  user's revisions and of the priors trained on them are replaced by `REDACTED_REASONS`,
  in the decision events that carry them and in the catalog, so a rebuild from the log
  gives the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from psycopg.types.json import Jsonb

from tessera.events.db import Connection
from tessera.events.projections import RevisionRow
from tessera.schemas.events import PRIOR_USER_ID, EventType, RevisionState

REDACTED_REASONS: Final = ["[redacted: a user whose data this revision learned was forgotten]"]
# Decision events whose payload carries gate reasons.
REASON_EVENT_TYPES: Final = (EventType.REVISION_PROMOTED, EventType.REVISION_REJECTED)
# A revision in these states is served now or may be again (rollback, pending decision).
_SERVABLE: Final = frozenset({
    RevisionState.TRAINED, RevisionState.EVALUATED, RevisionState.PROMOTED,
    RevisionState.SUPERSEDED, RevisionState.ROLLED_BACK,
})


@dataclass(frozen=True, slots=True)
class MarkedPrior:
    """A tenant's served prior that a forget named for retraining."""

    tenant_id: str
    revision_id: str
    forgotten_position: int  # of the latest tombstone naming it


# Served priors named by a tombstone of their tenant (the events' type index finds them).
_MARKED_PRIORS: Final = (
    "SELECT h.tenant_id, h.revision_id, max(e.position) FROM heads h "
    "JOIN events e ON e.tenant_id = h.tenant_id "
    "WHERE h.user_id = %(prior)s AND e.event_type = %(forgotten)s "
    "AND (e.data -> 'retrain_prior_revision_ids') ? h.revision_id "
    "AND (%(tenant)s::text IS NULL OR h.tenant_id = %(tenant)s::text) "
    "GROUP BY h.tenant_id, h.revision_id ORDER BY h.tenant_id"
)


def served_priors_to_retrain(conn: Connection, tenant_id: str | None = None) -> list[MarkedPrior]:
    """The served priors (of `tenant_id`, else of every tenant) trained on a user who was
    forgotten since: the nightly run trains their replacement first."""
    rows = conn.execute(
        _MARKED_PRIORS,
        {"prior": PRIOR_USER_ID, "forgotten": str(EventType.USER_FORGOTTEN), "tenant": tenant_id},
    ).fetchall()
    return [MarkedPrior(str(t), str(r), int(p)) for t, r, p in rows]


def trained_on(row: RevisionRow, user_id: str) -> bool:
    """Whether the prior revision `row` sampled `user_id`'s events."""
    hyper = row.provenance.get("hyperparameters")
    dataset = hyper.get("dataset") if isinstance(hyper, dict) else None
    users = dataset.get("users") if isinstance(dataset, dict) else None
    return isinstance(users, list) and user_id in users


def priors_to_retrain(priors: Sequence[RevisionRow]) -> list[str]:
    """Of the priors trained on a forgotten user, those that may still be served."""
    return [r.revision_id for r in priors if r.state in _SERVABLE]


def redact_reasons_in_transaction(
    conn: Connection, tenant_id: str, user_id: str, revision_ids: Sequence[str]
) -> None:
    """Replace the gate reasons of `revision_ids` (of the streams `user_id` and the
    tenant prior) by REDACTED_REASONS."""
    if not revision_ids:
        return
    ids = sorted(set(revision_ids))
    conn.execute(
        "UPDATE events SET data = jsonb_set(data, '{reasons}', %s) "
        "WHERE tenant_id = %s AND user_id = ANY(%s::text[]) AND event_type = ANY(%s::text[]) "
        "AND data->>'revision_id' = ANY(%s::text[]) "
        "AND jsonb_typeof(data->'reasons') = 'array' AND jsonb_array_length(data->'reasons') > 0",
        (Jsonb(REDACTED_REASONS), tenant_id, [user_id, PRIOR_USER_ID],
         [str(t) for t in REASON_EVENT_TYPES], ids),
    )
    conn.execute(
        # Rows without reasons (undecided) keep none: the log gives them none either.
        "UPDATE revisions SET reasons = %s WHERE tenant_id = %s AND revision_id = ANY(%s::text[]) "
        "AND reasons <> '[]'::jsonb",
        (Jsonb(REDACTED_REASONS), tenant_id, ids),
    )
