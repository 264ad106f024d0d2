"""The decision stage: Ray actors hosting engines, writing Parquet shards.

Every completed batch becomes one shard, written atomically (temporary file,
then rename), so a crash loses at most the batches in flight. A re-run reads
the keys already written and computes only the missing ones.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.conditions import PromptRequest
from engine.errors import LensauditError

KEY = ["model", "condition", "case_id", "sample"]

DECISION_SCHEMA = pa.schema([
    ("model", pa.string()), ("condition", pa.string()), ("case_id", pa.string()),
    ("sample", pa.int64()), ("choice", pa.string()), ("y", pa.int64()),
    ("p_positive", pa.float64()), ("choice_logprobs", pa.string()), ("reasoning", pa.string()),
    ("prompt_hash", pa.string()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("latency_s", pa.float64()), ("backend", pa.string()),
    ("seed", pa.int64()),
])


class DecisionStore:
    """Parquet shards under `<run_dir>/decisions/`; the key is unique on read."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "decisions"

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet")) if self.dir.is_dir() else []

    def write(self, rows: list[dict]) -> Path | None:
        if not rows:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=DECISION_SCHEMA)
        final = self.dir / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = final.with_name("." + final.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        return final

    def load(self) -> pd.DataFrame:
        """All decisions, one row per key (the first written wins)."""
        shards = self.shards()
        if not shards:
            return DECISION_SCHEMA.empty_table().to_pandas()
        frames = []
        for shard in shards:
            try:
                frames.append(pq.read_table(shard, schema=DECISION_SCHEMA).to_pandas())
            except Exception as exc:
                raise LensauditError(f"{shard}: unreadable decisions shard ({exc}); "
                                     "delete it to recompute its decisions") from None
        df = pd.concat(frames, ignore_index=True)
        return df.drop_duplicates(KEY, keep="first").reset_index(drop=True)

    def done_keys(self) -> set[tuple]:
        df = self.load()
        return set(zip(df["model"], df["condition"], df["case_id"], df["sample"].astype(int)))


def pending(requests: list[PromptRequest], store: DecisionStore) -> list[PromptRequest]:
    done = store.done_keys()
    return [r for r in requests if r.key not in done]


def order_for_prefix_cache(requests: list[PromptRequest]) -> list[PromptRequest]:
    """Group requests with the same instruction so shared prefixes are adjacent."""
    return sorted(requests, key=lambda r: (r.model, r.messages[0]["content"], r.condition))


def _batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def ensure_ray() -> None:
    """Start a local Ray (or join RAY_ADDRESS) once per process."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            include_dashboard=False,
            log_to_driver=bool(os.environ.get("LENSAUDIT_RAY_LOGS")),
            configure_logging=False,
        )


def run_decisions(
    requests: list[PromptRequest],
    store: DecisionStore,
    engines: dict[str, "object"],
    *,
    batch_size: int,
    temperature: float,
    seed: int,
    cache_root: str,
    progress: bool = True,
    pools: dict | None = None,
) -> int:
    """Compute the pending decisions with one actor pool per model.

    Args:
      requests: every request of the job (done ones are skipped).
      engines: model label -> (EngineConfig, replicas).
      pools: model label -> live actors, owned by the caller and reused across
        calls (a job's condition waves share engines: an engine start costs
        most of a minute on CPU); the caller kills them (`kill_pools`). Without
        it, the actors started here are killed before returning.
    Returns:
      the number of decisions computed in this call.
    """
    import ray
    from tqdm import tqdm

    from engine.backends._vllm import VLLMDecider

    todo = order_for_prefix_cache(pending(requests, store))
    if not todo:
        return 0
    ensure_ray()
    by_model: dict[str, list[PromptRequest]] = {}
    for r in todo:
        by_model.setdefault(r.model, []).append(r)

    owned = pools is None
    pools = {} if pools is None else pools
    actors, queue = [], []
    for label, reqs in by_model.items():
        if label not in pools:
            config, replicas = engines[label]
            gpus = config.tensor_parallel_size if _has_gpus() else 0
            actor_cls = ray.remote(VLLMDecider).options(
                num_cpus=1, num_gpus=gpus, max_restarts=2, max_task_retries=2,
                runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": cache_root}},
            )
            pools[label] = [actor_cls.remote(config, cache_root) for _ in range(replicas)]
        pool = pools[label]
        actors.extend(pool)
        queue.extend((pool, batch) for batch in _batches(reqs, batch_size))

    bars = {label: tqdm(total=len(reqs), desc=label, unit="dec", disable=not progress,
                        file=sys.stderr, dynamic_ncols=True) for label, reqs in by_model.items()}
    in_flight: dict = {}
    load = {id(a): 0 for a in actors}
    done = 0
    try:
        while queue or in_flight:
            # Keep two batches in flight per actor: the engine batches them.
            while queue:
                pool, batch = queue[0]
                actor = min(pool, key=lambda a: load[id(a)])
                if load[id(actor)] >= 2:
                    break
                queue.pop(0)
                ref = actor.decide.remote(batch, temperature=temperature, seed=seed)
                in_flight[ref] = (actor, batch)
                load[id(actor)] += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            actor, batch = in_flight.pop(ready[0])
            load[id(actor)] -= 1
            rows = ray.get(ready[0])
            store.write(rows)
            done += len(rows)
            bars[batch[0].model].update(len(rows))
    finally:
        for bar in bars.values():
            bar.close()
        if owned:
            kill_pools(pools)
    return done


def kill_pools(pools: dict) -> None:
    """Stop the engine actors of `run_decisions(..., pools=)`."""
    import ray

    for actors in pools.values():
        for a in actors:
            ray.kill(a)
    pools.clear()


def _has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
