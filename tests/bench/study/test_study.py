"""The study end to end on the tiny model: two synthetic speakers through the real ingest
API, worker, PostgreSQL log, nightly job, gate and served-model lookup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tessera.bench.commands.study import HttpIngest
from tessera.bench.study.design import build_design
from tessera.bench.study.experiment import StudyConfig, run_study
from tessera.bench.study.generate import GenerationConfig
from tessera.bench.study.report import plot, table, write_json
from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID, EventType
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.pipeline import Engine

from .conftest import STYLES, general_set, synthetic_speaker, tiny_study_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUIRED = {"id", "n_train", "n_test", "nll_base", "nll_personal", "nll_shared",
            "nll_personal_from_base", "nll_by_night", "drift_base", "drift_personal",
            "promoted", "rejected"}
SHARES = ("attribution_base", "attribution_shared", "attribution_personal", "attribution_real",
          "repetition_base", "repetition_shared", "repetition_personal")


def test_study_replays_speakers_through_the_system(
    study_engine: Engine, database_url: str, http_ingest: HttpIngest, tmp_path: Path
) -> None:
    speakers = [synthetic_speaker("alice", 40), synthetic_speaker("bob", 40)]
    design = build_design(speakers, general_set(), days=2, max_train=30, max_test=5)
    arms = [StudyConfig("r4", tiny_study_config(4)), StudyConfig("r2", tiny_study_config(2))]
    runs, doc = run_study(design, arms, engine=study_engine,
                          adapters=LocalAdapterStore(tmp_path / "adapters"),
                          database_url=database_url, ingest=http_ingest, tenant_prefix="st",
                          generation=GenerationConfig(sweep_penalties=(1.0, 1.5),
                                                      extrapolations=(0.0, 2.0)))

    assert [r["label"] for r in doc["runs"]] == ["r4", "r2"]
    assert doc["speakers"] == doc["runs"][0]["speakers"]
    for key in ("beats_base", "beats_shared", "mean_gain_vs_base", "mean_gain_vs_shared",
                "gate_right"):
        assert key in doc
    for key in SHARES:
        assert 0.0 <= doc[f"mean_{key}"] <= 1.0, key
    assert 0 <= doc["served_worse_than_prior"] <= 2
    # Personal models learned their speaker's one sentence ("see you", "the beach"); the
    # prior, trained on both, answers alike for both: the classifier tells the difference.
    assert doc["mean_attribution_personal"] > doc["mean_attribution_shared"]
    assert doc["generation"]["max_new_tokens"] == 32
    # The sweep regenerates at each other penalty; at 1.0 it reproduces the main figures.
    sweep = doc["runs"][0]["generation_sweep"]
    assert [p.get("repetition_penalty") for p in sweep[:2]] == [1.0, 1.5]
    for key in SHARES:
        assert sweep[0][f"mean_{key}"] == doc[f"mean_{key}"], key
        assert 0.0 <= sweep[1][f"mean_{key}"] <= 1.0, key
    # Extrapolation: every speaker served a personal adapter gets one; at strength 0 it
    # is the personal adapter again, so the run's own figures come back.
    first = runs[0].speakers
    n_personal = sum(s.served_source == "personal" for s in first)
    at_zero, at_two = sweep[2], sweep[3]
    assert (at_zero["extrapolation"], at_two["extrapolation"]) == (0.0, 2.0)
    assert at_zero["speakers_extrapolated"] == at_two["speakers_extrapolated"] == n_personal
    assert n_personal >= 1
    assert at_zero["mean_gain_vs_shared"] == pytest.approx(
        doc["runs"][0]["mean_gain_vs_shared"], abs=1e-4)
    assert at_zero["mean_attribution_personal"] == doc["runs"][0]["mean_attribution_personal"]
    assert at_two["mean_gain_vs_shared"] != pytest.approx(at_zero["mean_gain_vs_shared"])
    assert 0.0 <= at_two["mean_attribution_personal"] <= 1.0
    with PostgresEventStore(database_url) as store:
        for run in runs:
            for s in run.speakers:
                assert set(s.to_json()) >= REQUIRED | set(SHARES)
                for key in SHARES:
                    assert 0.0 <= s.to_json()[key] <= 1.0, key
                # Each speaker's real test messages are their history's one sentence:
                # the classifier (trained on the history) attributes all of them.
                assert s.style.attribution_real == 1.0
                replies = s.style.sample_replies
                assert set(replies) == {"base", "shared", "personal"}
                assert all(len(r) == 3 for r in replies.values())
                assert (s.n_train, s.n_test) == (30, 5)
                assert len(s.nll_by_night) == 2 and len(s.nll_shared_by_night) == 2
                # Every decided night's candidate is measured and its decision checked.
                decided = [d for d in s.decisions_by_night if d in ("promoted", "rejected")]
                assert sum(r is not None for r in s.gate_right_by_night) == len(decided)
                assert sum(math.isfinite(v) for v in s.nll_candidate_by_night) == len(decided)
                assert all(math.isfinite(v) for v in
                           (s.nll_base, s.nll_personal, s.nll_shared, s.drift_personal))
                # A speaker who answers the same way every time: after two nights the
                # served model predicts their held-out answers clearly better than the base.
                assert s.nll_personal < 0.95 * s.nll_base
                assert s.nll_personal_from_base < s.nll_base
                # Gate counts are the log's revisions of that speaker, each decided.
                revisions = store.list_revisions(run.tenant_id, s.id)
                assert s.promoted == sum(r.state in ("promoted", "superseded")
                                         for r in revisions)
                assert s.promoted + s.rejected == len(revisions)
                if s.promoted:
                    assert s.served_source == "personal" and s.adapter_bytes > 0
                # The test set never reached the log: only the history was sent.
                sent = store.read(tenant_id=run.tenant_id, user_id=s.id,
                                  event_types=[str(EventType.EXCHANGE)])
                assert len(sent) == 30
                assert {e.envelope.data["response"] for e in sent} == {STYLES[s.id]}
            assert store.list_revisions(run.tenant_id, PRIOR_USER_ID), "no prior trained"
        # Rank 2 adapters are smaller than rank 4 ones.
        r4, r2 = runs
        assert r2.speakers[0].adapter_bytes < r4.speakers[0].adapter_bytes

    text = table("r4", runs[0].speakers, runs[0].aggregates)
    assert "alice" in text and "beats base" in text
    png = plot(tmp_path / "study.png", "tiny", runs[0].speakers)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "replies attributed to their speaker" in text
    line = write_json(tmp_path / "study.json", doc)
    assert json.loads(line) == json.loads((tmp_path / "study.json").read_text())
