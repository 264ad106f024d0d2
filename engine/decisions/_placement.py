"""Placing engine actors on a Ray cluster: one pool per model, GPUs never oversubscribed.

Each replica of a model gets a placement group of `tensor_parallel_size`
bundles of {GPU: 1, CPU: 1} (PACK: on one node where possible). The engine
actor is scheduled into its group and captures it for its children, so a
tensor-parallel vLLM engine starts its GPU workers inside the group, on GPUs
no other replica holds. Before anything starts, the whole job's demand is
checked against the cluster so that a job that cannot fit fails at once with
the numbers, instead of waiting forever for GPUs held by its own other pools.

Without GPUs in the cluster (vLLM-CPU), a replica is a plain actor with one CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import LensauditError


@dataclass(frozen=True)
class PoolSpec:
    label: str
    replicas: int
    tensor_parallel_size: int


def check_gpu_demand(pools: list[PoolSpec], cluster_gpus: float) -> int:
    """Total GPUs the pools need; a clear error when the cluster has fewer."""
    need = sum(p.replicas * p.tensor_parallel_size for p in pools)
    if need > cluster_gpus:
        parts = ", ".join(f"{p.label}: {p.replicas} x {p.tensor_parallel_size}" for p in pools)
        raise LensauditError(f"the models need {need} GPUs ({parts}; replicas x "
                             f"tensor_parallel_size) but the cluster has {cluster_gpus:g}: "
                             "lower replicas or run the models in separate jobs")
    return need


def start_pool(actor_cls, pool: PoolSpec, args: tuple, *, use_gpus: bool, runtime_env: dict,
               ready_timeout_s: float = 600.0) -> tuple[list, list]:
    """Start the replicas of one model; returns (actor handles, placement groups).

    `actor_cls` is a plain class (made remote here) whose constructor takes `args`.
    """
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    remote_cls = ray.remote(actor_cls)
    actors, groups = [], []
    for _ in range(pool.replicas):
        if not use_gpus:
            actors.append(remote_cls.options(
                num_cpus=1, max_restarts=2, max_task_retries=2, runtime_env=runtime_env,
            ).remote(*args))
            continue
        tp = pool.tensor_parallel_size
        pg = placement_group([{"GPU": 1, "CPU": 1}] * tp, strategy="PACK")
        groups.append(pg)
        try:
            ray.get(pg.ready(), timeout=ready_timeout_s)
        except Exception:
            raise LensauditError(f"{pool.label}: no room for {tp} GPU(s) within "
                                 f"{ready_timeout_s:.0f} s; is the cluster busy?") from None
        # tp = 1: the engine itself holds the GPU. tp > 1: the engine holds none
        # and its workers (children) take the group's bundles.
        actors.append(remote_cls.options(
            num_cpus=0 if tp > 1 else 1, num_gpus=0 if tp > 1 else 1,
            max_restarts=2, max_task_retries=2, runtime_env=runtime_env,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=pg, placement_group_bundle_index=-1 if tp > 1 else 0,
                placement_group_capture_child_tasks=True),
        ).remote(*args))
    return actors, groups
