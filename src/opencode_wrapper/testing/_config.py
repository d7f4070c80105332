"""How opencode is pointed at the offline model: the provider config and a ready ``RunConfig``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencode_wrapper.config import RunConfig

#: The provider id the offline model is registered under in opencode's config.
PROVIDER_ID = "offline"
#: The model id inside that provider (also what ``GET /v1/models`` lists).
MODEL_ID = "scripted"
#: The ``provider/model`` string to give opencode (``-m offline/scripted``).
MODEL = f"{PROVIDER_ID}/{MODEL_ID}"


def provider_config(base_url: str) -> dict[str, Any]:
    """The opencode config fragment that declares the offline model at ``base_url`` (ending in ``/v1``).

    ``@ai-sdk/openai-compatible`` is bundled in the opencode binary, so nothing is downloaded.
    """
    return {
        "provider": {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Offline scripted model",
                "options": {"baseURL": base_url, "apiKey": "offline"},
                "models": {MODEL_ID: {"name": MODEL_ID, "tool_call": True, "reasoning": True}},
            }
        }
    }


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        existing = out.get(key)
        if isinstance(value, Mapping) and isinstance(existing, Mapping):
            out[key] = _merge(existing, value)
        else:
            out[key] = value
    return out


def run_config(base_url: str, **fields: Any) -> RunConfig:
    """A ``RunConfig`` using the offline model at ``base_url``.

    ``model`` defaults to :data:`MODEL`; ``config_overrides`` is the provider config plus
    ``{"share": "disabled"}``, deep-merged with the caller's ``config_overrides`` (the caller wins);
    every other keyword is passed to ``RunConfig`` unchanged.
    """
    # Imported here: opencode_wrapper.config may import more of the package than a test server needs.
    from opencode_wrapper.config import RunConfig

    overrides = _merge(provider_config(base_url), {"share": "disabled"})
    overrides = _merge(overrides, fields.pop("config_overrides", None) or {})
    fields.setdefault("model", MODEL)
    return RunConfig(config_overrides=overrides, **fields)
