"""Multi-model pools on a local Ray with 4 logical GPUs and a test double engine.

The double never touches CUDA or a model: it reports the GPU ids Ray assigned
to it (tensor-parallel size 1) or to worker tasks it starts inside its
placement group (tensor-parallel size > 1), which is where vLLM's own workers
would run.
"""

import sys

import numpy as np

import pytest

from engine.decisions.backends import EngineConfig
from engine.records import decision_row
from engine.prompts import build_requests
from engine.decisions import DecisionStore, EnginePools, run_decisions
from engine.errors import LensauditError

pytestmark = pytest.mark.slow


class FakeGPUDeciderTestDouble:
    """Test double for VLLMDecider: no CUDA, no model; answers the first choice."""

    backend = "fake-gpu-test-double"

    def __init__(self, config, cache_root=None):
        import ray

        self.config = config
        if config.tensor_parallel_size == 1:
            self.gpus = list(ray.get_gpu_ids())
        else:
            @ray.remote(num_gpus=1, num_cpus=1)
            def tp_worker():
                return ray.get_gpu_ids()

            self.gpus = [g for ids in ray.get([tp_worker.remote()
                                               for _ in range(config.tensor_parallel_size)])
                         for g in ids]

    def ready(self):
        return self.config.label

    def gpu_ids(self):
        return self.gpus

    def decide(self, requests, *, temperature=0.0, seed=0, reasoning_max_tokens=256):
        return [decision_row(r, r.choices[0], {}, prompt_tokens=0, completion_tokens=1,
                             latency=0.0, backend=self.backend, seed=seed) for r in requests]


@pytest.fixture(scope="module")
def ray_with_4_gpus():
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=8, num_gpus=4, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


def test_pools_share_four_gpus_without_overlap(ray_with_4_gpus, german, tmp_path):
    ray = ray_with_4_gpus
    cases = german.subset(per_class=10, seed=0)
    requests = (build_requests(cases, "model-a", "baseline", samples=2)
                + build_requests(cases, "model-b", "baseline", samples=2))
    engines = {"model-a": (EngineConfig("unused", "model-a", tensor_parallel_size=1), 2),
               "model-b": (EngineConfig("unused", "model-b", tensor_parallel_size=2), 1)}
    store = DecisionStore(tmp_path)
    pools = EnginePools()
    try:
        n = run_decisions(requests, store, engines, batch_size=7, temperature=0.0, seed=0,
                          cache_root=str(tmp_path), progress=False, pools=pools,
                          decider_cls=FakeGPUDeciderTestDouble)
        assert n == 80
        gpus = {label: [ray.get(a.gpu_ids.remote()) for a in actors]
                for label, actors in pools.actors.items()}
        assert [len(g) for g in gpus["model-a"]] == [1, 1]  # two replicas, one GPU each
        assert [len(g) for g in gpus["model-b"]] == [2]  # one replica over two GPUs
        every = [g for per in gpus.values() for replica in per for g in replica]
        assert sorted(every) == sorted(set(every)) and len(every) == 4
        assert ray.available_resources().get("GPU", 0) == 0  # all held by the pools
    finally:
        pools.kill()
    d = store.load()
    assert len(d) == 80 and not d.duplicated(["model", "condition", "case_id", "sample"]).any()


def test_a_job_that_needs_more_gpus_than_the_cluster_fails_at_once(ray_with_4_gpus, german,
                                                                     tmp_path):
    cases = german.subset(per_class=2, seed=0)
    requests = (build_requests(cases, "big", "baseline")
                + build_requests(cases, "small", "baseline"))
    engines = {"big": (EngineConfig("unused", "big", tensor_parallel_size=2), 2),
               "small": (EngineConfig("unused", "small", tensor_parallel_size=1), 1)}
    with pytest.raises(LensauditError, match=r"need 5 GPUs \(big: 2 x 2, small: 1 x 1"):
        run_decisions(requests, DecisionStore(tmp_path), engines, batch_size=4,
                      temperature=0.0, seed=0, cache_root=str(tmp_path), progress=False,
                      decider_cls=FakeGPUDeciderTestDouble)


def test_statistics_run_on_a_gpu_actor_when_the_cluster_has_one(ray_with_4_gpus, tmp_path):
    """statistics.device: the refits move to a Ray actor holding a GPU (here one
    of the 4 logical GPUs: a fake, as this machine has none) and give the same
    numbers as in the driver, the same resamples; `cpu` keeps them here."""
    from engine.job import run_job
    from engine.spec import load_job

    def job(device, name):
        return load_job("jobs/german_credit_demo.yaml", [
            "models=[simulated:cos=0.5]", "dataset.subset.per_class=10",
            "statistics.bootstrap=50", "statistics.permutations=50",
            f"statistics.device={device}", f"output.run_dir={tmp_path / name}",
            f"output.tracking_uri=sqlite:///{tmp_path / name}.db"])

    logs = []
    on_gpu = run_job(job("gpu", "gpu"), progress=False, log=logs.append)
    assert "statistics: on a Ray actor with 1 GPU (JAX on cpu)" in logs
    here = run_job(job("cpu", "cpu"), progress=False, log=lambda *_: None)
    a, b = on_gpu.summary.set_index("model"), here.summary.set_index("model")
    cols = [c for c in b.columns if b[c].dtype.kind == "f"]
    assert {"r_cos_cf", "r_cos", "p_perm"} <= set(cols)
    np.testing.assert_allclose(a.loc[b.index, cols].to_numpy(float), b[cols].to_numpy(float),
                               rtol=0, atol=1e-9, equal_nan=True)
    # the actor is gone after the job: the GPU is free for the next one
    assert ray_with_4_gpus.available_resources().get("GPU") == 4


def test_statistics_on_gpu_without_one_is_refused(monkeypatch):
    from engine.audit import _place as stats_place
    from engine.errors import LensauditError
    from engine.audit import StatisticsPlace

    monkeypatch.setattr(stats_place, "_cluster_gpus", lambda: 0.0)  # a cluster of CPUs only
    with pytest.raises(LensauditError, match="statistics.device: gpu, but the job's Ray "
                                             "cluster has no GPU"):
        StatisticsPlace("gpu")
    assert not StatisticsPlace("auto").remote and not StatisticsPlace("cpu").remote


def test_cells_spread_over_pinned_worker_processes_give_the_drivers_numbers(tmp_path,
                                                                          monkeypatch):
    """statistics.workers: the cells audited in two worker processes, each
    pinned to one core, give every statistic as the driver computes it, in the
    plan's order though the introspective wave started while the baseline
    wave's last cells ran; they compile into the environment's JAX cache (the
    CLI's), kept for the next run."""
    from engine.job import run_job
    from engine.spec import load_job

    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))

    def job(workers):
        return load_job("jobs/german_credit_demo.yaml", [
            "models=[simulated:cos=0.5, simulated:org]",
            "conditions=[baseline, org_externalized, introspective]",
            "statistics.device=cpu",  # (a Ray with logical GPUs may be up from another test)
            "dataset.subset.per_class=30", "statistics.bootstrap=20",
            "statistics.permutations=20", f"statistics.workers={workers}",
            f"output.run_dir={tmp_path / 'run'}",
            f"output.tracking_uri=sqlite:///{tmp_path / str(workers)}.db"])

    logs = []
    spread = run_job(job(2), progress=False, log=logs.append)
    assert "statistics: the cells in 2 worker processes, one core each" in logs
    assert any(f.name.startswith("jit_refit_batch") for f in (tmp_path / "jax").iterdir())
    here = run_job(job(1), progress=False, log=logs.append)
    a, b = spread.summary, here.summary
    models = ("simulated:cos=0.5", "simulated:org")
    plan = [(m, c) for m in models for c in ("baseline", "org_externalized")]
    plan += [(m, "introspective") for m in models]  # (the second wave)
    assert list(zip(a["model"], a["condition"])) == list(zip(b["model"], b["condition"])) == plan
    assert list(spread.audit.policy_tables) == plan
    cols = [c for c in b.columns if b[c].dtype.kind == "f"]
    assert {"r_cos_cf", "r_cos_cf_ci_low", "p_perm", "lme_G", "alignment_change"} <= set(cols)
    np.testing.assert_allclose(a[cols].to_numpy(float), b[cols].to_numpy(float),
                               rtol=0, atol=1e-9, equal_nan=True)


def test_started_calls_give_their_results_in_any_order():
    """`StatisticsPlace.start`: one function per call; in this process each
    call runs when its result is first asked for, once; on workers all start
    at once. Either way a caller may take the results out of order."""
    from engine.audit import StatisticsPlace

    ran = []

    def square(x):
        ran.append(x)
        return x * x

    here = StatisticsPlace("cpu")
    waits = here.start([(square, (k,), {}) for k in range(3)])
    assert ran == []  # nothing asked for yet
    assert [waits[2](), waits[0](), waits[2]()] == [4, 0, 4]
    assert ran == [2, 0]
    spread = StatisticsPlace("cpu", workers=2)
    try:
        waits = spread.start([(pow, (k, 2), {}) for k in range(4)])
        assert [w() for w in reversed(waits)] == [9, 4, 1, 0]
    finally:
        spread.close()


def test_pinned_workers_each_hold_one_core():
    from engine.audit import StatisticsPlace, usable_cores, worker_count

    place = StatisticsPlace("cpu", workers=2)
    try:
        cores = place.map(usable_cores, [((), {}), ((), {})])
    finally:
        place.close()
    assert cores == [1, 1]
    assert worker_count("auto", 999) == 1 and worker_count("auto", 2000) == usable_cores()
    assert worker_count(3, 10) == 3


def test_workers_do_not_run_the_users_script_again(tmp_path):
    """A script that uses the statistics workers without an `if __name__ ==
    "__main__":` guard (as a library user's may) runs once: spawn would run it
    again in every worker, each of which then died with a bootstrapping error."""
    import os
    import subprocess
    from pathlib import Path

    script = tmp_path / "no_guard.py"
    script.write_text(
        "from engine.audit import StatisticsPlace, usable_cores\n"
        "print('script ran', flush=True)\n"
        "place = StatisticsPlace('cpu', workers=2)\n"
        "print(place.map(usable_cores, [((), {}), ((), {})]))\n"
        "place.close()\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["script ran", "[1, 1]"]


def test_a_shared_object_is_written_once_and_its_handle_travels():
    """`StatisticsPlace.share` with workers: the object is written to a file
    once and each call carries a handle of a few bytes, which the worker
    replaces with the object; the file goes with the place."""
    import os
    import pickle

    from engine.audit import StatisticsPlace

    big = np.arange(200_000.0)
    place = StatisticsPlace("cpu", workers=2)
    try:
        handle = place.share(big)
        assert len(pickle.dumps(handle)) < 500 < big.nbytes
        sums = place.map(np.sum, [((handle,), {})] * 4)
        assert sums == [big.sum()] * 4
        assert place.run(np.mean, a=handle) == big.mean()  # (a keyword argument too)
        path = handle.path
        assert os.path.exists(path)
    finally:
        place.close()
    assert not os.path.exists(path)
    assert StatisticsPlace("cpu").share(big) is big  # in this process: the object itself
