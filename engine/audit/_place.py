"""Where the statistics stage runs (`statistics.device`): in this process, or
on a Ray actor that holds a GPU, so that on a GPU cluster the bootstrap and
permutation refits run on an accelerator and not on the head node's CPU.

`auto` (the default) uses a GPU actor when the job's Ray cluster has a GPU
and this process's JAX has none; `gpu` insists (an error names what is
missing); `cpu` keeps everything here. One actor serves the whole job, so
JAX compiles each refit program once; the large inputs every cell shares
(the encoded cases, the organisation's bootstrap refits) go to Ray's object
store once (`share`), not once per cell.

On a Ray cluster of several nodes (the job joined it through RAY_ADDRESS) and
with `statistics.workers: auto`, every call is a Ray task instead, spread over
the nodes (one CPU each, or one GPU each where the cluster has GPUs and the
device allows them), the shared inputs put in the object store once: no node
sits idle while the cells are audited.

Without a GPU, the cells of a wave are independent, and `statistics.workers`
spreads them over worker processes, one per core, each pinned to its core
(`map`). Measured on this project's 2-core machine: XLA's own threads gain
nothing on the refits' batch sizes (one refit batch took 0.147 s on both
cores, 0.135 s on one), while two pinned processes each ran at 0.145 s, twice
the throughput (`benchmarks/audit.py`). Each cell's numbers do not depend on
where it ran.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import tempfile
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Callable

from engine.audit._devices import jax_devices
from engine.errors import LensauditError


def _jax_platforms() -> list[str]:
    import jax

    return sorted({d.platform for d in jax.devices()})


def _joined_ray():
    """The `ray` module where this process started or joined Ray, else None
    (Ray is not imported only to ask: a job without it never loads it)."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def _cluster_gpus() -> float:
    ray = _joined_ray()
    return float(ray.cluster_resources().get("GPU", 0)) if ray else 0.0


def _cluster_nodes() -> int:
    """Alive nodes of the Ray cluster this process joined (0 without Ray)."""
    ray = _joined_ray()
    return sum(1 for n in ray.nodes() if n.get("Alive")) if ray else 0


def _on_node(fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs) as a Ray task, with the node it ran on."""
    import ray

    return fn(*args, **kwargs), ray.get_runtime_context().get_node_id()


class _StatisticsActor:
    """Runs statistics functions in the actor's process (which holds the GPU)."""

    def run(self, fn: Callable, *args, **kwargs):
        return fn(*args, **kwargs)

    def devices(self) -> str:
        return jax_devices()


def _cores() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many cores this process may run on."""
    return len(_cores())


#: Below this many refits per cell (bootstrap + permutations), `workers: auto`
#: keeps the cells here: a worker's start (its imports and its own compiled
#: refit programs, about 10 s of one core) would cost more than it saves.
AUTO_WORKERS_REFITS = 1000


def worker_count(workers: int | str, refits: int) -> int:
    """Worker processes for `statistics.workers` (an int, or auto) at `refits`
    per cell: auto is one per usable core for jobs of at least
    `AUTO_WORKERS_REFITS` refits per cell, else 1 (this process)."""
    if workers == "auto":
        return usable_cores() if refits >= AUTO_WORKERS_REFITS else 1
    return max(1, int(workers))


def statistics_workers(stats) -> int:
    """The worker processes for a job's `statistics:` settings (`worker_count`
    of its `workers` at its bootstrap + permutation refits per cell)."""
    return worker_count(stats.workers, stats.bootstrap + stats.permutations)


def statistics_place(stats) -> "StatisticsPlace":
    """Where a job's `statistics:` settings put its calls: `device`, `workers`
    (`statistics_workers`), and with `workers: auto` the nodes of the Ray
    cluster the job joined, where it has several."""
    return StatisticsPlace(stats.device, statistics_workers(stats),
                           spread=stats.workers == "auto")


def _pin_worker(counter, cores: list[int], cache_dir: str) -> None:
    """A worker's start: one core of its own, one thread for the numerical
    libraries (set before they load: the worker imports them with its first
    task), and JAX's compilation cache in `cache_dir`, shared by the job's
    workers: a refit program one of them compiled, the others load (about 2 s
    of compiling each, against 0.1 s). The settings are the worker process's
    own; the driver's JAX is left alone.

    `cache_dir` is the environment's JAX_COMPILATION_CACHE_DIR where there is
    one (the CLI's `$LENSAUDIT_CACHE/jax`): the next run's workers then load
    every program instead of compiling it."""
    with counter.get_lock():
        k = counter.value
        counter.value += 1
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cores[k % len(cores)]})
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if "numpy" in sys.modules:  # loaded already (by the parent's main module)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        threadpool_limits(1)


class _ScriptFreeProcess(SpawnProcess):
    """A spawned process that does not run the parent's main module again.

    Spawn runs the parent's `__main__` in every child (as `__mp_main__`), so a
    user's script that calls `run_job` without an `if __name__ == "__main__":`
    guard would start the job again in each worker, which then dies with a
    traceback about bootstrapping. The workers run only functions of this
    package, which they import by name; they need nothing from the script.
    """

    def start(self):
        # what spawn reads to find the main module (spawn.get_preparation_data)
        main = sys.modules["__main__"]
        saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__spec__ = None
        try:
            super().start()
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class _ScriptFreeSpawn(SpawnContext):
    """Python's spawn context with `_ScriptFreeProcess`."""

    Process = _ScriptFreeProcess


class _Shared:
    """An object every worker's calls receive, written once to a file by the
    driver (`StatisticsPlace.share`); a worker reads it at its first call and
    keeps it. Measured: a cell's shared arguments (the organisation's
    reference and Lens Model extras) pickle to 63 MB, 0.1-0.15 s of pickling,
    piping and unpickling for every cell where it is now once per worker."""

    def __init__(self, path: str):
        self.path = path


_SHARED: dict[str, Any] = {}  # in a worker: path -> the object read from it


def _resolved(value: Any) -> Any:
    if not isinstance(value, _Shared):
        return value
    if value.path not in _SHARED:
        with open(value.path, "rb") as f:
            _SHARED[value.path] = pickle.load(f)
    return _SHARED[value.path]


def _call(fn: Callable, args: tuple, kwargs: dict):
    """fn(*args, **kwargs) in a worker, with shared objects in place of their handles."""
    return fn(*map(_resolved, args), **{k: _resolved(v) for k, v in kwargs.items()})


def _once(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn, run at its first call only; later calls return that result."""
    done: list = []

    def result():
        if not done:
            done.append(fn())
        return done[0]
    return result


class StatisticsPlace:
    """Runs the statistics stage's calls here, on one GPU actor, as Ray tasks
    spread over the nodes of a cluster, or (`map`) spread over pinned CPU
    worker processes."""

    def __init__(self, device: str = "auto", workers: int = 1, *, spread: bool = False):
        """`spread`: the calls may be Ray tasks over the nodes of the cluster
        this process joined, when it has several (`statistics.workers: auto`)."""
        self.device = device
        self.actor = None
        self.tasks = None  # the Ray task each call becomes, on a cluster
        self.nodes = 0
        self.ran_on: dict[str, int] = {}  # node id -> calls it ran (tasks)
        self.workers = workers
        self._pool = None
        self._cache = None  # the workers' shared compilation cache
        self._own_cache = False  # (a temporary folder this place removes)
        self._shared_dir = None  # the files of `share`, with workers
        gpus = _cluster_gpus()
        if device == "gpu" and gpus < 1:
            raise LensauditError(
                "statistics.device: gpu, but the job's Ray cluster has no GPU "
                "(use auto or cpu, or run on a cluster with GPUs)")
        nodes = _cluster_nodes() if spread else 0
        if nodes > 1:
            import ray

            self.nodes = nodes
            on_gpu = gpus >= 1 and device != "cpu"
            self.tasks = ray.remote(num_cpus=1, num_gpus=1 if on_gpu else 0,
                                    scheduling_strategy="SPREAD", max_retries=2)(_on_node)
            return
        if device == "cpu" or (device == "auto" and (gpus < 1 or "gpu" in _jax_platforms())):
            return  # auto: no GPU to move to, or this process has one already
        import ray

        self.actor = ray.remote(num_gpus=1, num_cpus=1)(_StatisticsActor).remote()

    @property
    def remote(self) -> bool:
        return self.actor is not None or self.tasks is not None

    @property
    def width(self) -> int:
        """How many calls run at once."""
        if self.tasks is not None:
            return max(2, self.nodes)
        return 1 if self.actor is not None else self.workers

    def describe(self) -> str:
        """Where the refits run, for the console."""
        if self.tasks is not None:
            return f"the cells as Ray tasks spread over the cluster's {self.nodes} nodes"
        if self.actor is None and self.workers > 1:
            return f"the cells in {self.workers} worker processes, one core each"
        if self.actor is None:
            return f"in this process (JAX on {jax_devices()})"
        import ray

        return f"on a Ray actor with 1 GPU (JAX on {ray.get(self.actor.devices.remote())})"

    def where_ran(self) -> str:
        """Where the tasks ran, for the console: calls per node."""
        return ", ".join(f"node {node[:8]}: {n} call(s)" for node, n in self.ran_on.items())

    def share(self, obj: Any) -> Any:
        """`obj` as the calls should receive it: put in Ray's object store once
        when they run on the actor or as tasks (Ray hands the object itself to
        the call); with workers, written to a file once (`_Shared`: each worker
        reads it once, not with every call)."""
        if not self.remote and self.workers < 2:
            return obj
        if not self.remote:
            if self._shared_dir is None:
                self._shared_dir = tempfile.mkdtemp(prefix="lensaudit-shared-")
            fd, path = tempfile.mkstemp(dir=self._shared_dir, suffix=".pkl")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            return _Shared(path)
        import ray

        return ray.put(obj)

    def run(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs), where the statistics run: with workers, on one of
        them (it compiles the refit programs the cells will use, once for all)."""
        if self.tasks is not None:
            return self._task(fn, args, kwargs)()
        if self.actor is None and self.workers > 1:
            return self._workers().submit(_call, fn, args, kwargs).result()
        if self.actor is None:
            return fn(*args, **kwargs)
        import ray

        # top-level arguments, so that Ray resolves shared objects (`share`)
        return ray.get(self.actor.run.remote(fn, *args, **kwargs))

    def map(self, fn: Callable, calls: list[tuple[tuple, dict]]) -> list:
        """[fn(*args, **kwargs) for args, kwargs in calls], in that order: on the
        worker processes when there are several and more than one call, else as
        `run` does."""
        return self.gather([(fn, a, k) for a, k in calls])

    def gather(self, calls: list[tuple[Callable, tuple, dict]]) -> list:
        """[fn(*args, **kwargs) for fn, args, kwargs in calls], as `map` runs them."""
        return self.later(calls)()

    def later(self, calls: list[tuple[Callable, tuple, dict]]) -> Callable[[], list]:
        """`gather(calls)`, started now on the worker processes when there are
        several (and more than one call): the returned function waits for the
        results. Elsewhere the calls run when it is called."""
        waits = self.start(calls)
        return lambda: [wait() for wait in waits]

    def start(self, calls: list[tuple[Callable, tuple, dict]]) -> list[Callable[[], Any]]:
        """One function per call that returns its result: the calls start now,
        in this order, on the worker processes when there are several (and more
        than one call); elsewhere each runs when its function is first called.
        A caller can so take the results it needs first while the rest run."""
        if self.tasks is not None:
            return [self._task(fn, a, k) for fn, a, k in calls]
        if self.actor is not None or self.workers < 2 or len(calls) < 2:
            return [_once(lambda fn=fn, a=a, k=k: self.run(fn, *a, **k)) for fn, a, k in calls]
        futures = [self._workers().submit(_call, fn, a, k) for fn, a, k in calls]
        return [f.result for f in futures]

    def _task(self, fn: Callable, args: tuple, kwargs: dict) -> Callable[[], Any]:
        """Start fn(*args, **kwargs) as a Ray task (top-level arguments, so that
        Ray resolves shared objects); the function returned waits for it."""
        import ray

        ref = self.tasks.remote(fn, *args, **kwargs)

        def result():
            value, node = ray.get(ref)
            self.ran_on[node] = self.ran_on.get(node, 0) + 1
            return value
        return _once(result)

    def _workers(self):
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            # spawn: a fresh interpreter (this process may run Ray's and JAX's threads)
            ctx = _ScriptFreeSpawn()
            self._cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
            if not self._cache:
                self._cache, self._own_cache = tempfile.mkdtemp(prefix="lensaudit-xla-cache-"), True
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                             initializer=_pin_worker,
                                             initargs=(ctx.Value("i", 0), _cores(), self._cache))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            if self._own_cache:
                shutil.rmtree(self._cache, ignore_errors=True)
        if self._shared_dir is not None:
            shutil.rmtree(self._shared_dir, ignore_errors=True)
            self._shared_dir = None
        if self.actor is not None:
            import ray

            ray.kill(self.actor)
            self.actor = None
