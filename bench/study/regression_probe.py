"""Does the gate's regression-set rise show in answers, and which personal recipe avoids it?

The gate refuses personal candidates whose NLL on the shared regression set (24 one-line
assistant answers: "The capital of France is Paris.") rises more than 2% over their
baseline. A personal chat adapter may raise that NLL only by moving away from the
reference answers' assistant *register*, which no user loses; or it may forget facts. This
probe tells them apart on real speakers, and compares personal recipes side by side:

1. a shared prior is trained on the chosen speakers' history (the prior's config);
2. for each recipe arm, a personal adapter per speaker is warm-started from that prior;
3. per model: test NLL on the speaker's most recent messages, regression-set NLL, and
   greedy answers to the regression prompts, scored by *fact recall*: the share of each
   reference answer's content words (digits, and words of 4+ letters that are not stop
   words) found in the generated answer.

Every arm's figures are kept. Use tuning speakers (`--seed 0`) to choose; report on
disjoint ones (`--seed 1`). Last stdout line: the JSON document.
"""

from __future__ import annotations

import re
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tessera.bench.study.design import choose_speakers, examples_of, split_speaker
from tessera.workers.dataset import Example
from tessera.workers.evaluator import canary_generations, mean_target_nll
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.regression_set import load_regression_set
from tessera.workers.trainer import train_adapter

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_STOP = frozenset({
    "that", "this", "with", "from", "have", "your", "they", "them", "then", "than", "what",
    "when", "where", "which", "while", "would", "could", "should", "there", "their", "about",
    "into", "over", "some", "more", "most", "also", "just", "like", "very", "here",
})
_WORD = re.compile(r"[a-z]+|\d+")


def content_words(text: str) -> set[str]:
    """Digits and 4+ letter non-stop words of `text`, lower-cased."""
    return {w for w in _WORD.findall(text.lower())
            if w.isdigit() or (len(w) >= 4 and w not in _STOP)}


def fact_recall(answer: str, reference: str) -> float:
    """Share of `reference`'s content words that `answer` contains (1.0 with none)."""
    wanted = content_words(reference)
    if not wanted:
        return 1.0
    return len(wanted & content_words(answer)) / len(wanted)


@dataclass(frozen=True, slots=True)
class ModelFigures:
    test_nll: float
    regression_nll: float
    fact_recall: float
    answers: tuple[str, ...]

    def summary(self) -> dict[str, float]:
        return {"test_nll": round(self.test_nll, 4),
                "regression_nll": round(self.regression_nll, 4),
                "fact_recall": round(self.fact_recall, 4)}


def measure(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, adapter: Path | None,
    test: Sequence[Example], *, max_length: int, answer_tokens: int,
) -> ModelFigures:
    regression = load_regression_set()
    items = regression.examples
    answers = canary_generations(model, tokenizer, [e.messages[0][1] for e in items],
                                 adapter=adapter, max_new_tokens=answer_tokens)
    recall = statistics.fmean(fact_recall(a, e.target) for a, e in zip(answers, items,
                                                                       strict=True))
    return ModelFigures(
        test_nll=mean_target_nll(model, tokenizer, test, adapter=adapter, max_length=max_length),
        regression_nll=mean_target_nll(model, tokenizer, items, adapter=adapter,
                                       max_length=max_length),
        fact_recall=recall,
        answers=tuple(answers),
    )


def _rel(new: float, old: float) -> float:
    return (new - old) / old


def run_probe(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, base_digest: str,
    arms: dict[str, dict[str, Any]], prior_config: LoraTrainConfig, n_speakers: int,
    min_messages: int, seed: int, max_train: int, max_test: int, answer_tokens: int = 24,
    speaker_ids: Sequence[str] | None = None, work_dir: Path | None = None,
) -> dict[str, Any]:
    """The probe's JSON document (see the module docstring)."""
    speakers = choose_speakers(speaker_ids=speaker_ids, n_speakers=n_speakers,
                               min_messages=min_messages, seed=seed, max_chars=None)
    split = [split_speaker(s, days=1, max_train=max_train, max_test=max_test,
                           test_fraction=0.2) for s in speakers]
    history = {s.speaker_id: examples_of(s.history, s.speaker_id) for s in split}
    tests = {s.speaker_id: examples_of(s.test, s.speaker_id) for s in split}
    folder = work_dir or Path(tempfile.mkdtemp(prefix="tessera-probe-"))
    length = prior_config.max_length
    pooled = [e for examples in history.values() for e in examples]
    pooled = [Example(e.messages, e.target, i + 1, e.kind) for i, e in enumerate(pooled)]
    prior = train_adapter(model, tokenizer, pooled, config=prior_config, base_digest=base_digest,
                          out_dir=folder / "prior", progress=True).blob_path
    per_speaker: list[dict[str, Any]] = []
    for speaker_id, examples in history.items():
        test = tests[speaker_id]
        base = measure(model, tokenizer, None, test, max_length=length,
                       answer_tokens=answer_tokens)
        shared = measure(model, tokenizer, prior, test, max_length=length,
                         answer_tokens=answer_tokens)
        row: dict[str, Any] = {"speaker": speaker_id, "base": base.summary(),
                               "shared": shared.summary(), "arms": {}}
        for name, overrides in arms.items():
            config = prior_config.with_overrides(overrides)
            blob = train_adapter(model, tokenizer, examples, config=config,
                                 base_digest=base_digest, init_adapter=prior,
                                 out_dir=folder / name / speaker_id).blob_path
            figures = measure(model, tokenizer, blob, test, max_length=length,
                              answer_tokens=answer_tokens)
            row["arms"][name] = {
                **figures.summary(),
                "gain_vs_shared": round(-_rel(figures.test_nll, shared.test_nll), 4),
                "regression_vs_shared": round(_rel(figures.regression_nll,
                                                   shared.regression_nll), 4),
                "sample_answers": list(figures.answers[:3]),
            }
        per_speaker.append(row)
    return {"speakers": [r["speaker"] for r in per_speaker], "seed": seed,
            "max_train": max_train, "max_test": max_test, "prior": prior_config.as_provenance(),
            "arms": arms, "per_speaker": per_speaker, "aggregate": _aggregate(per_speaker, arms)}


def _aggregate(rows: Sequence[dict[str, Any]], arms: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "fact_recall_base": round(statistics.fmean(r["base"]["fact_recall"] for r in rows), 4),
        "fact_recall_shared": round(statistics.fmean(r["shared"]["fact_recall"]
                                                     for r in rows), 4),
    }
    for name in arms:
        figures = [r["arms"][name] for r in rows]
        out[name] = {
            "beats_shared": sum(f["gain_vs_shared"] > 0 for f in figures) / len(figures),
            "mean_gain_vs_shared": round(statistics.fmean(f["gain_vs_shared"]
                                                          for f in figures), 4),
            "mean_regression_vs_shared": round(statistics.fmean(f["regression_vs_shared"]
                                                                for f in figures), 4),
            "max_regression_vs_shared": max(f["regression_vs_shared"] for f in figures),
            "fact_recall": round(statistics.fmean(f["fact_recall"] for f in figures), 4),
        }
    return out
