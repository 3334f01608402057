"""The night planner: signal threshold, order, budget (users, seconds), tenant fairness,
grouping by prior and config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tessera.workers.night_plan import NightCandidate, PlanConfig, plan_night

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def _c(tenant: str, user: str, *, events: int = 50, days: int | None = 1,
       prior: str | None = "p1", config: str = "c1") -> NightCandidate:
    last = None if days is None else NOW - timedelta(days=days)
    return NightCandidate(tenant, user, events, last, prior, config)


def _ids(candidates: tuple[NightCandidate, ...]) -> list[str]:
    return [c.user_id for c in candidates]


def test_users_without_enough_signal_are_skipped_with_a_reason() -> None:
    plan = plan_night([_c("a", "u1", events=19), _c("a", "u2", events=20)],
                      PlanConfig(min_new_events=20))
    assert _ids(plan.chosen) == ["u2"]
    assert [(c.user_id, why) for c, why in plan.skipped] == [("u1", "19 new events < 20")]
    assert plan.deferred == ()


def test_order_never_trained_then_oldest_then_most_events() -> None:
    plan = plan_night([_c("a", "recent", days=1), _c("a", "old", days=9),
                       _c("a", "never", days=None), _c("a", "old-busy", days=9, events=90)],
                      PlanConfig())
    assert _ids(plan.chosen) == ["never", "old-busy", "old", "recent"]


def test_user_budget_is_shared_round_robin_across_tenants() -> None:
    big = [_c("big", f"b{i}", days=10 + i) for i in range(10)]
    small = [_c("small", f"s{i}") for i in range(2)]
    plan = plan_night(big + small, PlanConfig(max_users=6))
    # one per tenant per round: the small tenant gets both its users, not zero
    assert _ids(plan.chosen) == ["b9", "s0", "b8", "s1", "b7", "b6"]
    assert len(plan.deferred) == 6 and {c.tenant_id for c in plan.deferred} == {"big"}
    # nobody is lost: chosen + deferred + skipped is everyone
    assert len(plan.chosen) + len(plan.deferred) + len(plan.skipped) == 12


def test_seconds_budget_defers_what_does_not_fit_and_takes_cheaper_users() -> None:
    config = PlanConfig(max_seconds=100, seconds_per_user=10, seconds_per_event=1)
    plan = plan_night([_c("a", "costly", events=95, days=5), _c("a", "cheap", events=30),
                       _c("b", "mid", events=40)], config)
    # costly (105 s) never fits; cheap (40 s) + mid (50 s) do
    assert _ids(plan.chosen) == ["cheap", "mid"]
    assert _ids(plan.deferred) == ["costly"]
    assert plan.estimated_seconds == pytest.approx(90)
    assert config.max_seconds is not None and plan.estimated_seconds <= config.max_seconds


def test_groups_share_prior_and_config_and_hold_at_most_k() -> None:
    users = [_c("a", f"a{i}", days=20 - i) for i in range(5)]
    users += [_c("a", "other-config", config="c2", days=30)]
    users += [_c("b", f"b{i}", prior="p2", days=20 - i) for i in range(2)]
    plan = plan_night(users, PlanConfig(group_size=2))
    groups = [(g.prior_id, g.config_key, _ids(g.members)) for g in plan.groups]
    assert groups == [
        ("p1", "c2", ["other-config"]),
        ("p2", "c1", ["b0", "b1"]),
        ("p1", "c1", ["a0", "a1"]),
        ("p1", "c1", ["a2", "a3"]),
        ("p1", "c1", ["a4"]),
    ]
    assert all(len(g.members) <= 2 for g in plan.groups)


def test_tenants_without_a_prior_never_share_a_group() -> None:
    # Same (no) prior and config: still one group per tenant, since a revision's
    # provenance lists its group and one tenant must not see another's users.
    users = [_c("a", "a0", prior=None), _c("b", "b0", prior=None), _c("a", "a1", prior=None)]
    plan = plan_night(users, PlanConfig(group_size=4))
    assert [(g.tenant_id, _ids(g.members)) for g in plan.groups] == [
        ("a", ["a0", "a1"]), ("b", ["b0"])]


def test_a_user_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        plan_night([_c("a", "u"), _c("a", "u")], PlanConfig())
