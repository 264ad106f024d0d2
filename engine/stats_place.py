"""Where the statistics stage runs (`statistics.device`): in this process, or
on a Ray actor that holds a GPU, so that on a GPU cluster the bootstrap and
permutation refits run on an accelerator and not on the head node's CPU.

`auto` (the default) uses a GPU actor when the job's Ray cluster has a GPU
and this process's JAX has none; `gpu` insists (an error names what is
missing); `cpu` keeps everything here. One actor serves the whole job, so
JAX compiles each refit program once; the large inputs every cell shares
(the encoded cases, the organisation's bootstrap refits) go to Ray's object
store once (`share`), not once per cell.
"""

from __future__ import annotations

from typing import Any, Callable

from engine.devices import jax_devices
from engine.errors import LensauditError


def _jax_platforms() -> list[str]:
    import jax

    return sorted({d.platform for d in jax.devices()})


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0


class _StatisticsActor:
    """Runs statistics functions in the actor's process (which holds the GPU)."""

    def run(self, fn: Callable, *args, **kwargs):
        return fn(*args, **kwargs)

    def devices(self) -> str:
        return jax_devices()


class StatisticsPlace:
    """Runs the statistics stage's calls here or on one GPU actor."""

    def __init__(self, device: str = "auto"):
        self.device = device
        self.actor = None
        if device == "cpu":
            return
        gpus = _cluster_gpus()
        if device == "gpu":
            if gpus < 1:
                raise LensauditError(
                    "statistics.device: gpu, but the job's Ray cluster has no GPU "
                    "(use auto or cpu, or run on a cluster with GPUs)")
        elif gpus < 1 or "gpu" in _jax_platforms():
            return  # auto: no GPU to move to, or this process has one already
        import ray

        self.actor = ray.remote(num_gpus=1, num_cpus=1)(_StatisticsActor).remote()

    @property
    def remote(self) -> bool:
        return self.actor is not None

    def describe(self) -> str:
        """Where the refits run, for the console."""
        if self.actor is None:
            return f"in this process (JAX on {jax_devices()})"
        import ray

        return f"on a Ray actor with 1 GPU (JAX on {ray.get(self.actor.devices.remote())})"

    def share(self, obj: Any) -> Any:
        """`obj` as the calls should receive it: put in Ray's object store once
        when they run on the actor (Ray hands the object itself to the call)."""
        if self.actor is None:
            return obj
        import ray

        return ray.put(obj)

    def run(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs), where the statistics run."""
        if self.actor is None:
            return fn(*args, **kwargs)
        import ray

        # top-level arguments, so that Ray resolves shared objects (`share`)
        return ray.get(self.actor.run.remote(fn, *args, **kwargs))

    def close(self) -> None:
        if self.actor is not None:
            import ray

            ray.kill(self.actor)
            self.actor = None
