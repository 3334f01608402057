"""The gate's extra check for personal revisions: do not get worse on the user's past.

A revision is evaluated on the user's most recent events (held out from its training).
Those alone cannot tell a real shift in the user from a poisoned stream — recent events
replaced by spam or adversarial text are "held out" too, and a candidate trained on them
predicts them well. So the candidate is also measured, against the baseline, on the
examples that the user's *earlier* revisions held out: it may not be worse on them by
more than the gate's `max_regression`. Those examples were never trained on by anyone,
so they stay a fair test of the user as they were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tessera.events.projections import RevisionRow
from tessera.schemas.events import INTERACTION_TYPES
from tessera.workers.dataset import Example, build_dataset
from tessera.workers.evaluator import mean_target_nll
from tessera.workers.gate import GateDecision
from tessera.workers.revision_types import Engine, RevisionLog

_INTERACTIONS = sorted(str(t) for t in INTERACTION_TYPES)


@dataclass(frozen=True)
class HistoryCheck:
    candidate_nll: float
    baseline_nll: float
    examples: int


def history_examples(
    store: RevisionLog, tenant_id: str, user_id: str, *, before: int, limit: int,
    revisions: Sequence[RevisionRow] | None = None, forgotten_after: int | None = None,
) -> tuple[Example, ...]:
    """The user's examples that earlier personal revisions held out, at positions <=
    `before`, the most recent `limit` of them. Forgotten content is never read.
    `revisions` (the user's) and `forgotten_after` (their last forget position), when the
    caller has read them already, are not read again."""
    if revisions is None:
        revisions = store.list_revisions(tenant_id, user_id)
    positions: set[int] = set()
    for row in revisions:
        if row.kind == "personal" and row.state != "forgotten":
            held = row.provenance.get("heldout_positions", [])
            positions.update(int(p) for p in held if int(p) <= before)
    if not positions or limit <= 0:
        return ()
    chosen = sorted(positions)[-limit:]
    if forgotten_after is None:
        forgotten_after = store.last_forgotten_position(tenant_id, user_id)
    after = max(chosen[0] - 1, forgotten_after)
    events = store.read(after=after, upto=chosen[-1], tenant_id=tenant_id, user_id=user_id,
                        event_types=_INTERACTIONS)
    split = build_dataset(events, holdout_k=0, from_position=after, to_position=chosen[-1])
    wanted = set(chosen)
    return tuple(e for e in split.train if e.position in wanted)


def history_check(
    engine: Engine,
    history: tuple[Example, ...],
    candidate: Path,
    baseline: Path | None,
    *,
    max_length: int,
) -> HistoryCheck | None:
    """Candidate and baseline NLL on `history` (None when there is no history)."""
    if not history:
        return None
    def nll(adapter: Path | None) -> float:
        value: float = mean_target_nll(engine.model, engine.tokenizer, history,
                                       adapter=adapter, max_length=max_length)
        return value

    return HistoryCheck(nll(candidate), nll(baseline), len(history))


def with_history(decision: GateDecision, history: HistoryCheck, tolerance: float) -> GateDecision:
    """`decision`, also refused when the candidate is worse than the baseline on the
    user's earlier held-out examples by more than `tolerance` (relative)."""
    change = (history.candidate_nll - history.baseline_nll) / abs(history.baseline_nll or 1.0)
    if math.isfinite(change) and change <= tolerance:
        if not decision.promote:
            return decision
        note = (f"earlier held-out NLL {history.candidate_nll:.4f} vs {history.baseline_nll:.4f} "
                f"({change:+.2%}) on {history.examples} examples")
        return replace(decision, reasons=[*decision.reasons, note])
    why = (f"earlier held-out NLL {history.candidate_nll:.4f} vs baseline "
           f"{history.baseline_nll:.4f} on {history.examples} examples: worse by {change:+.2%} "
           f"> allowed {tolerance:.2%} (the recent data is unlike this user's history)")
    reasons = [why] if decision.promote else [*decision.reasons, why]
    return replace(decision, promote=False, reasons=reasons)
