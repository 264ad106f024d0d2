"""The decision stage: Ray actors hosting engines, writing Parquet shards.

Every completed batch becomes one shard, written atomically (temporary file,
then rename), so a crash loses at most the batches in flight. A re-run reads
the keys already written and computes only the missing ones.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import LensauditError
from engine.records import DECISION_METHOD, DECISION_SCHEMA, KEY, METHOD_CHANGES, PromptRequest
from engine.servers import check_ray_address

#: A shard of fewer rows than this is small (one engine batch); `MERGE_AT`
#: small shards written in a row are merged into one.
SMALL_SHARD = 10_000
MERGE_AT = 64


class DecisionStore:
    """Parquet shards under `<run_dir>/decisions/`; the key is unique on read."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir) / "decisions"
        # The last load and the shards it was made of. A shard is written once,
        # under a name that sorts after those before it, and never changed, so
        # a later load reads only the new shards (a job loads the store several
        # times a wave; reading 1,000 shards took 2.5 s).
        self._loaded: tuple[list[Path], pd.DataFrame] | None = None
        self._small: list[Path] = []  # small shards written since the last merge

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet")) if self.dir.is_dir() else []

    def write(self, rows: list[dict] | Mapping[str, Sequence], *,
              temperature: float | None = None) -> Path | None:
        """One shard of `rows` (a list of rows, or columns by name), each stamped
        with how it was made: this lensaudit's `DECISION_METHOD` and the
        `temperature` its backend sampled at (None: rows no sampler made, as
        simulated ones)."""
        n = len(rows["model"]) if isinstance(rows, Mapping) else len(rows)
        if not n:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        made = {"method": DECISION_METHOD, "temperature": temperature}  # unless a row says
        names = DECISION_SCHEMA.names
        if isinstance(rows, Mapping):
            columns = {c: rows[c] if c in rows else [made.get(c)] * n for c in names}
        else:
            columns = {c: [r.get(c, made.get(c)) for r in rows] for c in names}
        final = self._write_shard(pa.Table.from_pydict(columns, schema=DECISION_SCHEMA))
        if n < SMALL_SHARD:
            self._small.append(final)
            if len(self._small) >= MERGE_AT:
                self._merge_small()
        return final

    def _write_shard(self, table: pa.Table) -> Path:
        """`table` as a new shard, named to sort after every shard before it;
        written whole or not at all (a temporary file, then a rename)."""
        final = self.dir / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = final.with_name("." + final.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        return final

    def _merge_small(self) -> None:
        """The small shards this store wrote last, merged into one (in the order
        they were written, so the row a key keeps is the same): an engine writes
        a shard a batch, and a million decisions would otherwise be tens of
        thousands of files to read. A crash between the merged shard's write
        and the removals leaves rows twice, which `load` keeps once."""
        small, self._small = self._small, []
        shards = self.shards()
        if shards[-len(small):] != small:  # another writer came between: leave them
            return
        merged = self._write_shard(pa.concat_tables([_read_table(s) for s in small]))
        for s in small:
            s.unlink()
        if self._loaded is not None:
            loaded, kept = self._loaded
            gone = set(small)
            if gone <= set(loaded):  # the same rows, in one shard now
                self._loaded = ([s for s in loaded if s not in gone] + [merged], kept)
            elif gone & set(loaded):
                self._loaded = None

    def load(self) -> pd.DataFrame:
        """All decisions, one row per key: the last valid answer written wins (a
        key decided again, `decision.reuse: same`, takes its new decision); a
        key with none keeps its first attempt (y = -1: a reasoning-mode answer
        cut by the token budget), which a re-run decides again."""
        shards = self.shards()
        if not shards:
            return DECISION_SCHEMA.empty_table().to_pandas()
        before, kept = self._loaded or ([], None)
        if shards[:len(before)] != before:  # one vanished or sorts among them: read all
            before, kept = [], None
        new = shards[len(before):]
        if new:
            # The row per key of (what was kept, then the new rows) is that of
            # all the rows: the kept ones came first.
            fresh = pa.concat_tables([_read_table(s) for s in new]).to_pandas()
            kept = _one_per_key(fresh if kept is None else
                                pd.concat([kept, fresh], ignore_index=True))
            self._loaded = (shards, kept)
        return kept.copy()  # a caller may change its copy

    def done_keys(self) -> set[tuple]:
        """The keys with a valid answer: a re-run decides the others again
        (after `decision.reasoning_max_tokens` is raised, say)."""
        df = self.load()
        return set(_keys(df[df["y"] >= 0]))


def _one_per_key(df: pd.DataFrame) -> pd.DataFrame:
    """One row per key (`DecisionStore.load`): the last valid one, else the
    first; in the order the rows were written."""
    valid = df["y"] >= 0
    if valid.all() and not pd.Series(pd.util.hash_pandas_object(df[KEY], index=False)
                                     .to_numpy()).duplicated().any():
        return df  # each key once, answered (distinct hashes: distinct keys), as a run leaves it
    last_valid = df[valid].drop_duplicates(KEY, keep="last")
    answered = pd.MultiIndex.from_frame(last_valid[KEY])
    attempts = df[~valid]
    attempts = attempts[~pd.MultiIndex.from_frame(attempts[KEY]).isin(answered)]
    kept = pd.concat([last_valid, attempts.drop_duplicates(KEY, keep="first")]).sort_index()
    return kept.reset_index(drop=True)


def _read_table(shard: Path) -> pa.Table:
    try:
        return pq.read_table(shard, schema=DECISION_SCHEMA)
    except Exception as exc:
        raise LensauditError(f"{shard}: unreadable decisions shard ({exc}); "
                             "delete it to recompute its decisions") from None


def _keys(df: pd.DataFrame):
    """The decision keys (model, condition, case_id, sample) of the store's rows,
    as Python values (`tolist`: iterating the Arrow-backed string columns
    element by element took a second for 30,000 rows)."""
    return zip(df["model"].tolist(), df["condition"].tolist(), df["case_id"].tolist(),
               df["sample"].astype(int).tolist())


def pending(requests: list[PromptRequest], store: DecisionStore,
            again: frozenset = frozenset()) -> list[PromptRequest]:
    """The requests without a valid stored decision, and those whose key is in
    `again` (made otherwise than the job would make them, `reused`)."""
    done = store.done_keys() - again
    return [r for r in requests if r.key not in done]


def reused(requests: list[PromptRequest], store: DecisionStore, *, temperature: float,
           seed: int) -> list[tuple[PromptRequest, str]]:
    """The requests whose stored decision a run reuses although this job would
    make it otherwise, each with why: another prompt (an edited instruction or
    case set, a refitted organisation policy), another temperature, another
    seed (where the answer was drawn with it), or an earlier `DECISION_METHOD`
    whose change reaches the row's backend. The first reason found is given."""
    df = store.load()
    df = df[df["y"] >= 0]  # an attempt without an answer is decided again anyway
    if df.empty:
        return []
    stored = dict(zip(_keys(df), zip(df["prompt_hash"].tolist(), df["temperature"].tolist(),
                                     df["seed"].tolist(), df["method"].tolist(),
                                     df["backend"].tolist(), df["reasoning"].isna().tolist())))
    out = []
    for r in requests:
        if r.key not in stored:
            continue
        why = _made_otherwise(stored[r.key], prompt_hash=r.prompt_hash(),
                              temperature=temperature, seed=seed)
        if why:
            out.append((r, why))
    return out


def _made_otherwise(made: tuple, *, prompt_hash: str, temperature: float,
                    seed: int) -> str | None:
    """Why one stored row, `made` = (prompt hash, temperature, seed, method,
    backend, no reasoning), is not what this job would make (`reused`), or None."""
    made_hash, made_at, made_seed, method, backend, choice_only = made
    if made_hash != prompt_hash:
        return ("made with a different prompt (the case set, the condition's instruction or the "
                "organisation's policy changed since)")
    if not pd.isna(made_at) and made_at != temperature:
        return f"made at temperature {made_at:g} (this job's is {temperature:g})"
    # The seed draws the answer unless a sampler made the row greedily (a
    # simulated row has no temperature and is drawn with the seed).
    drawn = pd.isna(made_at) or made_at > 0
    if drawn and not pd.isna(made_seed) and int(made_seed) != seed:
        return f"made with seed {int(made_seed)} (this job's is {seed})"
    made_by = 1 if pd.isna(method) else int(method)
    for version in range(made_by + 1, DECISION_METHOD + 1):
        backends, what = METHOD_CHANGES[version]
        if backend in backends and choice_only:
            return what
    return None


def order_for_prefix_cache(requests: list[PromptRequest]) -> list[PromptRequest]:
    """Group requests with the same instruction so shared prefixes are adjacent."""
    return sorted(requests, key=lambda r: (r.model, r.messages[0]["content"], r.condition))


def _batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def ensure_ray() -> None:
    """Start a local Ray (or join RAY_ADDRESS) once per process.

    ray.init replaces the process's SIGTERM handler (with sys.exit, and its C++
    core with an abort), so the handlers in place before are put back: the CLI's
    turns SIGTERM into a clean stop that kills the engines and shuts Ray down.
    """
    import signal
    import threading

    import ray

    from engine import console

    console.adopt_logger("ray")  # its token-auth notice goes to the run's log file
    if not ray.is_initialized():
        main_thread = threading.current_thread() is threading.main_thread()
        saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        log_to_driver = bool(os.environ.get("LENSAUDIT_RAY_LOGS"))
        if not log_to_driver:
            _raylet_errors_to_log()
        check_ray_address()  # ray.init would wait minutes
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            include_dashboard=False,
            log_to_driver=log_to_driver,
            configure_logging=False,
        )
        if main_thread:
            for s, handler in saved.items():
                if handler is not None:
                    signal.signal(s, handler)


def _raylet_errors_to_log() -> None:
    """Send the raylet's error messages to the `ray` logger (the run's log file).

    Ray's driver prints them to stdout whatever `log_to_driver` says: an engine
    that cannot start becomes 90 lines of the actor's traceback among the
    results, which the job reports in one line of its own anyway. Ray has no
    setting for it, so the printer its listener calls is replaced (the
    listener looks it up by name at each message).
    """
    import logging

    import ray._private.worker as ray_worker

    log = logging.getLogger("ray")

    def to_log(data, ignore_prefix=False):
        for line in data.get("lines", []):
            log.warning("(%s) %s", data.get("pid", "ray"), line)

    ray_worker.print_to_stdstream = to_log


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
    decider_cls=None,
    reasoning_max_tokens: int = 256,
    again: frozenset = frozenset(),
) -> int:
    """Compute the pending decisions with one actor pool per model.

    Args:
      requests: every request of the job (done ones are skipped).
      engines: model label -> (EngineConfig, replicas).
      pools: an `EnginePools` owned by the caller and reused across calls; the
        caller kills it. Without it, the actors started here are killed before
        returning.
      decider_cls: the engine class hosted by each actor (default VLLMDecider).
      again: keys decided again although stored (`pending`).
    Returns:
      the number of decisions computed in this call.
    """
    import ray
    from ray.exceptions import RayActorError
    from tqdm import tqdm

    if not requests:  # (pending would read the store for nothing)
        return 0
    todo = order_for_prefix_cache(pending(requests, store, again))
    if not todo:
        return 0
    by_model: dict[str, list[PromptRequest]] = {}
    for r in todo:
        by_model.setdefault(r.model, []).append(r)

    owned = pools is None
    pools = EnginePools() if pools is None else pools
    failed = start_pools(pools, engines, list(by_model), cache_root=cache_root,
                         decider_cls=decider_cls)
    for label in failed:
        by_model.pop(label, None)

    # One queue per model, so a saturated pool never holds back another model's batches.
    queues = {label: _batches(reqs, batch_size) for label, reqs in by_model.items()}
    load = {id(a): 0 for label in by_model for a in pools.actors[label]}
    total = sum(len(reqs) for reqs in by_model.values())
    bars = {label: tqdm(total=len(reqs), desc=label[-30:], unit="dec", disable=not progress,
                        file=sys.stderr, dynamic_ncols=True, position=i + 1, leave=False)
            for i, (label, reqs) in enumerate(by_model.items())}
    overall = tqdm(total=total, desc="all models", unit="dec", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True, position=0)
    in_flight: dict = {}
    done = 0
    try:
        while any(queues.values()) or in_flight:
            # Keep two batches in flight per actor: the engine batches them.
            for label, queue in queues.items():
                for actor in pools.actors[label]:
                    while queue and load[id(actor)] < 2:
                        batch = queue.pop(0)
                        ref = actor.decide.remote(batch, temperature=temperature, seed=seed,
                                                 reasoning_max_tokens=reasoning_max_tokens)
                        in_flight[ref] = (actor, batch)
                        load[id(actor)] += 1
            if not in_flight:
                break
            # A timeout lets Ctrl-C and SIGTERM through while batches compute.
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            if not ready:
                continue
            actor, batch = in_flight.pop(ready[0])
            load[id(actor)] -= 1
            label = batch[0].model
            try:
                rows = ray.get(ready[0])
            except RayActorError as exc:  # died beyond its restarts: give up on this model
                failed[label] = engine_failure_reason(exc)
                queues[label] = []
                for ref, (_, b) in list(in_flight.items()):
                    if b[0].model == label:
                        del in_flight[ref]
                pools.drop(label)
                continue
            # Streamed: a crash loses only the batches in flight.
            store.write(rows, temperature=temperature)
            done += len(rows)
            bars[label].update(len(rows))
            overall.update(len(rows))
    finally:
        for bar in (*bars.values(), overall):
            bar.close()
        if owned:
            pools.kill()
    if failed:
        raise LensauditError("; ".join(
            f"model '{label}': the engine failed: {reason}" for label, reason in failed.items())
            + (f" ({done} decisions of the other models were computed and kept)" if done else ""))
    return done


def start_pools(pools: "EnginePools", engines: dict, labels: list[str], *, cache_root: str,
                decider_cls=None) -> dict[str, str]:
    """Start the engine pools of `labels` that `pools` does not hold yet, and wait
    until they are ready. Returns label -> reason for the engines that failed to
    start (their actors are stopped; the others stay up).

    Args:
      engines: model label -> (EngineConfig, replicas).
      decider_cls: the engine class hosted by each actor (default VLLMDecider).
    """
    import ray

    from engine.decisions.backends import VLLMDecider
    from engine.decisions._placement import PoolSpec, check_gpu_demand, start_pool

    decider_cls = decider_cls or VLLMDecider
    ensure_ray()
    use_gpus = _has_gpus()
    specs = [PoolSpec(label, engines[label][1], engines[label][0].tensor_parallel_size)
             for label in labels if label not in pools.actors]
    if use_gpus:
        held = sum(len(g.bundle_specs) for g in pools.groups)
        check_gpu_demand(specs, ray.cluster_resources().get("GPU", 0) - held)
    env = {"env_vars": {"HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": cache_root}}
    for spec in specs:
        actors, groups = start_pool(decider_cls, spec, (engines[spec.label][0], cache_root),
                                    use_gpus=use_gpus, runtime_env=env)
        pools.actors[spec.label] = actors
        pools.groups.extend(groups)
    # An engine that cannot start (a context longer than the model's, too little
    # memory) is reported by model, and the other models still run to the end.
    failed = wait_until_ready(pools, [s.label for s in specs])
    for label in failed:
        pools.drop(label)
    return failed


def wait_until_ready(pools: "EnginePools", labels: list[str]) -> dict[str, str]:
    """Wait for every engine of `labels` to start; label -> reason for those that failed."""
    import ray
    from ray.exceptions import RayActorError

    # An engine that raised while starting raises again: no retries of the probe.
    refs = {a.ready.options(max_task_retries=0).remote(): label
            for label in labels for a in pools.actors[label]}
    failed: dict[str, str] = {}
    pending_refs = list(refs)
    while pending_refs:
        done, pending_refs = ray.wait(pending_refs, num_returns=1, timeout=1.0)
        for ref in done:
            try:
                ray.get(ref)
            except RayActorError as exc:
                failed.setdefault(refs[ref], engine_failure_reason(exc))
    return failed


_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception))(?::\s*(.*))?$")


def engine_failure_reason(exc: Exception) -> str:
    """vLLM's own reason from a Ray actor error, in one line.

    The error's text holds the actor's traceback; the reason is its last
    `SomeError: message` line, with the message's continuation (pydantic puts
    the real sentence on the next lines, e.g. vLLM's max_model_len check).
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        m = _ERROR_LINE.match(lines[i])
        if not m or m.group(1) in ("RayActorError", "ActorDiedError", "RayTaskError"):
            continue
        text = m.group(2) or ""
        follow = [ln for ln in lines[i + 1:i + 4] if not ln.startswith(("File ", "For further",
                                                                       "(", "^"))]
        if follow and (not text or "validation error" in text):
            # pydantic: "1 validation error for ModelConfig" then "Value error, <the reason>"
            text = follow[0].removeprefix("Value error, ")
        text = re.sub(r"\s*\[type=.*$", "", text)
        if len(text) > 240 and ". " in text[60:]:  # the first sentence says it
            text = text[:60 + text[60:].index(". ") + 1]
        return f"{m.group(1)}: {text}"[:400]
    return (lines[-1] if lines else type(exc).__name__)[:400]


class EnginePools:
    """Engine actors per model and the placement groups they hold.

    Owned by a caller that runs several `run_decisions` calls (a job's condition
    waves share engines: a start costs most of a minute on CPU); `kill()` stops
    the actors and returns their GPUs.
    """

    def __init__(self):
        self.actors: dict[str, list] = {}
        self.groups: list = []

    def __bool__(self) -> bool:
        return bool(self.actors)

    def drop(self, label: str) -> None:
        """Stop one model's actors (its engine failed); the others keep running."""
        import ray

        for a in self.actors.pop(label, []):
            try:
                ray.kill(a)
            except Exception:  # already dead
                pass

    def kill(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for actors in self.actors.values():
            for a in actors:
                ray.kill(a)
        for g in self.groups:
            remove_placement_group(g)
        self.actors.clear()
        self.groups.clear()


def kill_pools(pools: "EnginePools") -> None:
    pools.kill()


def _has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
