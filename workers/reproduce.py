"""Re-train a recorded revision from its provenance alone and compare the digests.

The `RevisionTrained` payload names the dataset (builder, stream, positions, held-out
count, sampling parameters), the base weights, the parent adapter, the hyperparameters,
the seed and the torch thread count. This module rebuilds the dataset from the log with
those parameters, checks its digest, re-trains with the same warm start and seed, and
reports whether the adapter digest comes out the same. A revision trained in a night's
group (`hyperparameters["group"]`) is reproduced by re-training its whole group: every
member's dataset rebuilt from the inputs the group recorded, trained together in the
recorded order (a member's bytes depend on the group it was trained in).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.events.projections import RevisionRow
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers.adapter_store import sha256_file
from tessera.workers.dataset import Example, build_dataset
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.pipeline import INTERACTIONS, RevisionPipeline
from tessera.workers.prior import sample_prior_dataset
from tessera.workers.regression_bound import bounded_blob
from tessera.workers.revision_events import code_version


class ReproduceError(RuntimeError):
    """The revision cannot be re-trained here (unknown, other base, data forgotten)."""


@dataclass(frozen=True)
class Reproduction:
    revision_id: str
    dataset_digest: str
    dataset_matches: bool
    adapter_digest: str
    adapter_matches: bool
    recorded_code_version: str
    code_version: str


def reproduce_revision(pipeline: RevisionPipeline, revision_id: str) -> Reproduction:
    """Rebuild the dataset of `revision_id` from the log and re-train it."""
    import torch

    store = pipeline.store
    row = store.get_revision(revision_id)
    if row is None:
        raise ReproduceError(f"no revision {revision_id!r} in the catalog")
    prov = row.provenance
    hyper = prov["hyperparameters"]
    if prov["base_digest"] != pipeline.engine.base.digest:
        raise ReproduceError(
            f"revision {revision_id} was trained on base {prov['base_digest'][:12]}, "
            f"this process holds {pipeline.engine.base.digest[:12]}"
        )
    params = hyper["dataset"]
    if "group" in hyper:
        return _reproduce_group(pipeline, row, hyper["group"])
    if params["builder"] == "prior":
        sample = sample_prior_dataset(
            store, row.tenant_id, int(params["to"]), max_per_user=int(params["max_per_user"]),
            max_events=int(params["max_events"]), eval_users=len(params["eval_users"]),
            holdout_k=int(params["holdout_k"]), users=list(params["users"]),
            exclude_positions=params.get("excluded_positions", {}),
            # Priors recorded before every user's last examples were left out.
            personal_holdout=bool(params.get("personal_holdout", False)),
            # Priors recorded before their training order stopped following the log's.
            order=str(params.get("order", "position")),
        )
        train, digest = sample.train, sample.digest
    else:
        train, digest = _personal_train(pipeline, row.tenant_id, row.user_id, params)
    if row.user_id != PRIOR_USER_ID and not train:
        raise ReproduceError(f"revision {revision_id}: its events are gone (forgotten?)")

    from tessera.workers.trainer import train_adapter

    parent_digest = hyper.get("parent_adapter_digest")
    init = pipeline.adapters.path(parent_digest) if parent_digest else None
    config = LoraTrainConfig.model_validate(hyper["train"])
    threads = torch.get_num_threads()
    torch.set_num_threads(int(hyper.get("torch_threads", threads)))
    try:
        with tempfile.TemporaryDirectory(prefix="tessera-reproduce-") as tmp:
            result = train_adapter(
                pipeline.engine.model, pipeline.engine.tokenizer, train,
                config=config, base_digest=prov["base_digest"], init_adapter=init,
                seed=int(prov["seed"]), out_dir=Path(tmp),
            )
            adapter_digest = sha256_file(_bounded(pipeline, hyper, result.blob_path, init))
    finally:
        torch.set_num_threads(threads)
    return Reproduction(
        revision_id=revision_id, dataset_digest=digest,
        dataset_matches=digest == row.dataset_digest, adapter_digest=adapter_digest,
        adapter_matches=adapter_digest == row.adapter_digest,
        recorded_code_version=str(prov["code_version"]), code_version=code_version(),
    )


def _bounded(pipeline: RevisionPipeline, hyper: dict[str, Any], blob: Path,
             init: Path | None) -> Path:
    """The re-trained blob within the recorded config's regression bound, as stored."""
    config = LoraTrainConfig.model_validate(hyper["train"])
    if config.max_regression_rise is None:
        return blob
    recorded = hyper.get("regression_set", {}).get("digest")
    if recorded != pipeline.regression.digest:
        raise ReproduceError(
            f"the revision was bounded on regression set {str(recorded)[:12]}, this worker "
            f"holds {pipeline.regression.digest[:12]}: the bound would choose differently")
    head = hyper.get("regression_bound", {}).get("also_within")  # a rebase's head
    return bounded_blob(pipeline.engine.model, pipeline.engine.tokenizer, blob, init,
                        max_rise=config.max_regression_rise, stretch=config.step_stretch,
                        regression=pipeline.regression,
                        max_length=pipeline.config.eval_max_length,
                        also_within=(head, pipeline.adapters.path(head)) if head else None)


def _personal_train(pipeline: RevisionPipeline, tenant_id: str, user_id: str,
                    params: dict[str, Any]) -> tuple[tuple[Example, ...], str]:
    """A personal dataset's training examples and digest, rebuilt from the log."""
    after, upto = int(params["after"]), int(params["to"])
    events = pipeline.store.read(after=after, upto=upto, tenant_id=tenant_id, user_id=user_id,
                                 event_types=INTERACTIONS)
    split = build_dataset(events, holdout_k=int(params["holdout_k"]), from_position=after,
                          to_position=upto)
    return split.train, split.digest


def _reproduce_group(pipeline: RevisionPipeline, row: RevisionRow,
                     group: dict[str, Any]) -> Reproduction:
    """Re-train `row`'s whole group from the members' recorded inputs."""
    import torch

    from tessera.workers.group_trainer import GroupMember, train_group

    prov, hyper = row.provenance, row.provenance["hyperparameters"]
    config = LoraTrainConfig.model_validate(hyper["train"])
    members, digests = [], []
    for spec in group["members"]:
        train, digest = _personal_train(pipeline, row.tenant_id, spec["user_id"], spec["dataset"])
        if not train:
            raise ReproduceError(f"revision {row.revision_id}: the events of group member "
                                 f"{spec['user_id']!r} are gone (forgotten?)")
        parent = spec.get("parent_adapter_digest")
        members.append(GroupMember(spec["user_id"], train, config, seed=int(spec["seed"]),
                                   init_adapter=pipeline.adapters.path(parent) if parent
                                   else None))
        digests.append(digest)
    slot = int(group["slot"])
    threads = torch.get_num_threads()
    torch.set_num_threads(int(hyper.get("torch_threads", threads)))
    try:
        with tempfile.TemporaryDirectory(prefix="tessera-reproduce-") as tmp:
            outcomes = train_group(pipeline.engine.model, pipeline.engine.tokenizer, members,
                                   base_digest=prov["base_digest"], out_dir=Path(tmp),
                                   chunk_tokens=int(group["chunk_tokens"]))
            result = outcomes[slot].result
            if result is None:
                raise ReproduceError(f"revision {row.revision_id}: re-training failed: "
                                     f"{outcomes[slot].error}")
            adapter_digest = sha256_file(_bounded(pipeline, hyper, result.blob_path,
                                                  members[slot].init_adapter))
    finally:
        torch.set_num_threads(threads)
    return Reproduction(
        revision_id=row.revision_id, dataset_digest=digests[slot],
        dataset_matches=digests[slot] == row.dataset_digest, adapter_digest=adapter_digest,
        adapter_matches=adapter_digest == row.adapter_digest,
        recorded_code_version=str(prov["code_version"]), code_version=code_version(),
    )
