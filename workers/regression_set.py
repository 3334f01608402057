"""The fixed, versioned shared regression set shipped with the code.

Every gate decision compares a candidate with its baseline on these general prompts, so a
personal adapter cannot quietly break the shared model's general ability. A version is
never edited in place; its digest (over the canonical JSON) is recorded with each metric.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from tessera.workers.dataset import Example

DEFAULT_VERSION = "regression-v1"
_FILES = {"regression-v1": "regression_set_v1.json"}


@dataclass(frozen=True, slots=True)
class RegressionSet:
    version: str
    digest: str  # sha256 of the canonical JSON of version, canaries and items
    examples: tuple[Example, ...]
    canary_prompts: tuple[str, ...]


@lru_cache(maxsize=4)
def load_regression_set(version: str = DEFAULT_VERSION) -> RegressionSet:
    """The regression set `version` (each prompt a one-turn chat, the response the target)."""
    if version not in _FILES:
        raise KeyError(f"unknown regression set {version!r}; known: {sorted(_FILES)}")
    source = resources.files("tessera.workers").joinpath(_FILES[version])
    raw = json.loads(source.read_text("utf-8"))
    if raw["version"] != version:
        raise ValueError(f"{_FILES[version]} says version {raw['version']!r}, expected {version!r}")
    items = [{"prompt": i["prompt"], "response": i["response"]} for i in raw["items"]]
    canonical = {"version": raw["version"], "canary_prompts": raw["canary_prompts"],
                 "items": items}
    digest = hashlib.sha256(
        json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    examples = tuple(
        Example(messages=(("user", item["prompt"]),), target=item["response"], position=index,
                kind="exchange")
        for index, item in enumerate(items)
    )
    return RegressionSet(version, digest, examples, tuple(canonical["canary_prompts"]))
