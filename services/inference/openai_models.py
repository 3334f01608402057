"""Model names on the OpenAI surface: what `model` selects, and what `/v1/models` lists.

| `model`                    | answers with                                             |
|----------------------------|----------------------------------------------------------|
| `tessera` (the default)    | the `user` field's served model; no `user`: prior, else base |
| the base's id              | with `user`: that user's served model; without: the base alone |
| `prior`                    | the tenant's current prior (404 while it has none)       |
| `prior@<revision>`         | that revision of the tenant's prior                      |
| `user:<id>`                | whatever `<id>` is served now (personal, else prior, else base) |
| `user:<id>@<revision>`     | that revision of `<id>`, if it is theirs and passed the gate once |

Anything else is unknown (404). Users are never enumerated: a tenant may have millions,
so `/v1/models` lists the base and the prior and states the personal naming scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tessera.schemas.events import PRIOR_USER_ID
from tessera.services.inference.revisions import BASE, RevisionResolver, Served

DEFAULT_MODEL: Final = "tessera"
PRIOR_MODEL: Final = "prior"
USER_PREFIX: Final = "user:"
MAX_USER_CHARS: Final = 128
NAMING: Final = {
    "personal": "user:<user_id>",
    "pinned": "user:<user_id>@<revision_id>",
    "prior": "prior",
    "pinned_prior": "prior@<revision_id>",
    "default": f"{DEFAULT_MODEL} (routes by the request's `user`)",
}


class UnknownModelError(LookupError):
    """`model` names nothing this tenant can be served: 404 `model_not_found`."""


@dataclass(frozen=True)
class Target:
    """Whose request it is, and the revision when `model` fixed one (else the engine's
    resolver picks what the user is served at submit)."""

    user_id: str
    revision: Served | None = None


def resolve_model(
    resolver: RevisionResolver, base_id: str, tenant_id: str, model: str, user: str | None
) -> Target:
    """`model` (and `user`) -> Target; may query the catalog, so call it off the loop."""
    if model in (DEFAULT_MODEL, base_id):
        if user:
            return Target(user)
        return Target(PRIOR_USER_ID, None if model == DEFAULT_MODEL else BASE)
    name, _, revision_id = model.partition("@")
    if name == PRIOR_MODEL:
        user_id = PRIOR_USER_ID
    elif name.startswith(USER_PREFIX) and 0 < len(name) - len(USER_PREFIX) <= MAX_USER_CHARS:
        user_id = name[len(USER_PREFIX) :]
    else:
        raise UnknownModelError(
            f"the model `{model}` does not exist; use `{base_id}`, `{PRIOR_MODEL}`, "
            f"`{USER_PREFIX}<user_id>` or `{USER_PREFIX}<user_id>@<revision_id>` "
            "(GET /v1/models lists them)"
        )
    if revision_id:
        pinned = resolver.pinned(tenant_id, user_id, revision_id)
        if pinned is None:
            raise UnknownModelError(
                f"the model `{model}` does not exist: no revision `{revision_id}` of "
                f"`{name}` in your tenant that can be served (promoted once, not forgotten)"
            )
        return Target(user_id, pinned)
    if user_id == PRIOR_USER_ID:
        served = resolver.get(tenant_id, PRIOR_USER_ID)
        if served.source != "prior":
            raise UnknownModelError("the model `prior` does not exist: no prior is promoted yet")
        return Target(user_id, served)
    return Target(user_id)


def model_object(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "tessera", **extra}


def list_models(resolver: RevisionResolver, base_id: str, tenant_id: str) -> dict[str, Any]:
    """The OpenAI list: the base, the tenant's prior when it has one, and the scheme."""
    data = [model_object(base_id, tessera_source="base")]
    prior = resolver.get(tenant_id, PRIOR_USER_ID)
    if prior.source == "prior":
        data.append(
            model_object(PRIOR_MODEL, tessera_source="prior", tessera_revision=prior.revision_id)
        )
    return {"object": "list", "data": data, "tessera_naming": NAMING}


def describe(target: Target, model: str) -> dict[str, Any]:
    """`GET /v1/models/{model}` for a name `resolve_model` accepted."""
    served = target.revision
    extra: dict[str, Any] = {}
    if served is not None:
        extra = {"tessera_source": served.source, "tessera_revision": served.revision_id}
    return model_object(model, **extra)
