"""Plain-text renderings of audit answers for the CLI: a lineage tree, a provenance
sheet, a request line. Deterministic text (no colour codes), so it reads the same in a
terminal, a log file or a test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from tessera.services.audit.queries import (
    LogEntry,
    RequestAudit,
    RevisionNode,
    RevisionProvenance,
    UserLineage,
)

# Metrics shown on a tree line, in this order, when present (all are in the sheet).
_TREE_METRICS = ("user_nll", "user_gain", "regression_nll", "regression_change")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _num(value: float) -> str:
    return f"{value:.4g}"


def _metrics(node: RevisionNode) -> str:
    shown = [k for k in _TREE_METRICS if k in node.metrics] or sorted(node.metrics)[:4]
    parts = [f"{k}={_num(node.metrics[k])}" for k in shown]
    if "user_nll" in node.baseline_metrics:
        parts.append(f"baseline user_nll={_num(node.baseline_metrics['user_nll'])}")
    return ", ".join(parts) if parts else "not evaluated"


def _node_lines(node: RevisionNode) -> list[str]:
    served = "  <- served" if node.served else ""
    return [
        f"{node.revision_id}  [{node.state}]{served}",
        f"trained {_when(node.trained_at)} by {node.trigger or '?'}; "
        f"decided {_when(node.decided_at)}",
        f"data #{node.dataset_from}..#{node.dataset_to}; adapter {node.adapter_digest[:16]}",
        f"metrics: {_metrics(node)}",
        f"gate: {'; '.join(node.reasons) if node.reasons else '-'}",
    ]


def _tree(nodes: dict[str, RevisionNode], ids: list[str], prefix: str) -> Iterator[str]:
    for i, rid in enumerate(ids):
        last = i == len(ids) - 1
        first, *rest = _node_lines(nodes[rid])
        yield prefix + ("└── " if last else "├── ") + first
        inner = prefix + ("    " if last else "│   ")
        children = [c for c in nodes[rid].children if c in nodes]
        for line in rest:
            yield inner + ("│ " if children else "  ") + line
        yield from _tree(nodes, children, inner)


def _history_line(e: LogEntry) -> str:
    what = e.event_type
    if e.event_type == "revision.rolled_back":
        before = e.data.get("from_revision_id") or "none"
        what += f" {before} -> {e.data.get('to_revision_id') or 'prior/base'}"
    elif e.event_type == "revision.superseded_by_prior":
        what += f" {e.revision_id} -> prior {e.data.get('prior_revision_id')}"
    elif e.revision_id:
        what += f" {e.revision_id}"
    who = f" by {e.actor}: {e.reason}" if e.actor else ""
    return f"  #{e.position}  {_when(e.recorded_at)}  {what}{who}"


def lineage_text(lin: UserLineage) -> str:
    served = lin.served
    head = f"{served.source}" + (f" {served.revision_id}" if served.revision_id else "")
    lines = [
        f"{lin.tenant_id}/{lin.user_id}: served {head}; {lin.interactions} interactions"
        + (f"; forgotten {_when(lin.forgotten_at)}" if lin.forgotten_at else ""),
    ]
    nodes = {n.revision_id: n for n in lin.revisions}
    if not nodes:
        lines.append("(no revisions)")
    for root in lin.roots:
        parent = nodes[root].parent_revision_id
        lines.append(f"from {parent + ' (tenant prior)' if parent else 'the base model'}")
        lines.extend(_tree(nodes, [root], ""))
    if lin.history:
        lines.append("history:")
        lines.extend(_history_line(e) for e in lin.history)
    return "\n".join(lines)


def provenance_text(prov: RevisionProvenance) -> str:
    r, p, d = prov.revision, prov.provenance, prov.dataset
    rows = [
        ("revision", r.revision_id),
        ("stream", f"{r.tenant_id}/{r.user_id} ({r.kind})"),
        ("state", r.state + (" (served now)" if r.served else "")),
        ("parent", r.parent_revision_id or "base model"),
        ("base model", f"{r.base_model_id} sha256:{r.base_digest}"),
        ("adapter", f"sha256:{r.adapter_digest} ({p.get('adapter_bytes', '?')} bytes)"),
        ("lora", f"rank {p.get('rank')}, alpha {p.get('alpha')}, targets "
                 f"{', '.join(p.get('target_modules', []))}"),
        ("seed", str(p.get("seed"))),
        ("dataset", f"positions {d.from_position}..{d.to_position}, {d.count} events"
                    f"{f' ({d.redacted} redacted)' if d.redacted else ''}, sha256:{d.digest}"),
        ("held out", ", ".join(f"#{x}" for x in p.get("heldout_positions", [])) or "-"),
        ("code version", r.code_version),
        ("trigger", r.trigger),
        ("trained", f"{_when(r.trained_at)} in {p.get('train_seconds', '?')} s"),
        ("evaluated", _when(r.evaluated_at)),
        ("decided", _when(r.decided_at)),
        ("metrics", ", ".join(f"{k}={_num(v)}" for k, v in sorted(r.metrics.items())) or "-"),
        ("baseline", (r.baseline_revision_id or "-") + ": " + (
            ", ".join(f"{k}={_num(v)}" for k, v in sorted(r.baseline_metrics.items())) or "-")),
        ("gate reasons", "; ".join(r.reasons) or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("hyperparameters:")
    lines.extend(
        "  " + line for line in json.dumps(p.get("hyperparameters", {}), indent=2, sort_keys=True)
        .splitlines()
    )
    lines.append("events:")
    lines.extend(_history_line(e) for e in prov.events)
    return "\n".join(lines)


def request_text(req: RequestAudit) -> str:
    answered = req.revision_id or "the base model"
    line = (
        f"request {req.request_id} at {_when(req.at)}: {req.tenant_id}/{req.user_id} was "
        f"answered by {answered} ({req.source})"
    )
    if req.adapter_digest:
        line += f", adapter sha256:{req.adapter_digest}"
    if req.revision is not None:
        line += f"; that revision is {req.revision.state} now"
    return line
