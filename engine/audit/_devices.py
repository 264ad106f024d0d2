"""Where the refits will run, as the user reads it before a long run
(`lensaudit run --dry-run` prints it): the devices JAX sees, and what
`statistics.device` and `statistics.workers` make of them."""

from __future__ import annotations


def jax_devices() -> str:
    """This process's JAX devices: "cpu", or "cuda:0, cuda:1"."""
    import jax

    names = [("cuda" if d.platform == "gpu" else d.platform)
             + (f":{d.id}" if d.platform != "cpu" else "") for d in jax.devices()]
    return ", ".join(dict.fromkeys(names))


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
