"""Crashes cost no finished work: SIGTERM and kill -9 of the driver mid-run, and a
killed engine actor."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import alive, descendants, session_pids

from engine.decisions.backends import EngineConfig
from engine.records import decision_row
from engine.prompts import build_requests
from engine.decisions import DecisionStore, run_decisions

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def raw_keys(store: DecisionStore):
    import pyarrow.parquet as pq

    keys = []
    for shard in store.shards():
        t = pq.read_table(shard).to_pandas()
        keys += list(zip(t["model"], t["condition"], t["case_id"], t["sample"]))
    return keys


def wait_for_shards(store: DecisionStore, n: int, driver: subprocess.Popen) -> None:
    deadline = time.time() + 400
    while len(store.shards()) < n:
        assert driver.poll() is None, "the run ended before it could be stopped"
        assert time.time() < deadline, "no decisions written in 400 s"
        time.sleep(0.2)


def test_sigterm_stops_the_engines_and_ray_and_keeps_the_decisions(tmp_path,
                                                                       bundled_model_path):
    args = [sys.executable, "-m", "engine.cli", "run", "jobs/german_credit_demo.yaml",
            "--no-progress", "--set", "dataset.subset.per_class=15", "--set",
            "decision.batch_size=2", "--set", f"output.run_dir={tmp_path / 'run'}",
            "--set", "statistics.bootstrap=50", "--set", "statistics.permutations=50",
            "--set", f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    store = DecisionStore(tmp_path / "run")

    # 1. SIGTERM: the driver stops its engines and the Ray it started, says what is kept.
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        wait_for_shards(store, 1, driver)
        started = set(descendants(driver.pid)) | set(session_pids(driver.pid))
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            for pid in session_pids(driver.pid):
                os.kill(pid, signal.SIGKILL)
    assert driver.returncode == 128 + signal.SIGTERM, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"stopped by SIGTERM; the decisions written so far are kept in {tmp_path / 'run'}" \
        in lines[0]
    assert len(started) > 3  # Ray's own processes and the engine actor were running
    deadline = time.time() + 60
    while [p for p in started if alive(p)] and time.time() < deadline:
        time.sleep(0.5)
    assert not [p for p in started if alive(p)], "processes left behind after SIGTERM"
    after_term = raw_keys(store)
    assert 0 < len(after_term) < 30 and len(set(after_term)) == len(after_term)

    # The single line above was all of stderr while Ray and the engine started and
    # decided: no Ray notice, no JAX fork warning (they are in the run's log file).
    log = (tmp_path / "run" / "lensaudit.log").read_text()
    assert "Started a local Ray instance" in log and "os.fork()" not in log

    # 2. A re-run would compute only what is missing (the kill -9 test below runs one).
    plan = subprocess.run(args + ["--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert f"30 in all, {len(after_term)} already done, {30 - len(after_term)} to compute" \
        in plan.stdout


class SlowOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that answers "Bad" after a pause."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # the plan's reachability probe
        self._send({"data": []})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.2)
        self._send({"choices": [{"message": {"content": "Bad"}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 1}})

    def _send(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_kill_9_of_the_driver_then_rerun_gives_every_key_exactly_once(tmp_path):
    """Nothing can clean up after kill -9: the shards written before it are whole and
    reused. (The backend does not matter to the store; an OpenAI-compatible server
    that answers slowly keeps the run going long enough to be killed half-way.)"""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    args = [sys.executable, "-m", "engine.cli", "run", "jobs/german_credit_demo.yaml",
            "--no-progress", "--set", "models=[openai:slow]", "--set",
            f"models.0.base_url=http://127.0.0.1:{server.server_port}/v1",
            "--set", "models.0.max_concurrency=1", "--set", "dataset.subset.per_class=15",
            "--set", "decision.batch_size=2", "--set", f"output.run_dir={tmp_path / 'run'}",
            "--set", "statistics.bootstrap=50", "--set", "statistics.permutations=50",
            "--set", f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    store = DecisionStore(tmp_path / "run")
    try:
        driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_shards(store, 3, driver)
        finally:
            for pid in session_pids(driver.pid):
                os.kill(pid, signal.SIGKILL)
            driver.wait(timeout=60)
        partial = raw_keys(store)
        assert 0 < len(partial) < 30 and len(set(partial)) == len(partial)

        rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        server.shutdown()
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{30 - len(partial)} computed now, {len(partial)} reused" in rerun.stdout
    keys = raw_keys(store)
    assert len(keys) == 30 and len(set(keys)) == 30  # every key, exactly once
    assert set(partial) <= set(keys)


class SlowDeciderTestDouble:
    """Test double for VLLMDecider: no model; answers after a pause, reports its PID."""

    backend = "slow-test-double"

    def __init__(self, config, cache_root=None):
        self.config = config

    def ready(self):
        return self.config.label

    def pid(self):
        return os.getpid()

    def decide(self, requests, *, temperature=0.0, seed=0, reasoning_max_tokens=256):
        time.sleep(0.3)
        return [decision_row(r, r.choices[1], {}, prompt_tokens=0, completion_tokens=1,
                             latency=0.3, backend=self.backend, seed=seed) for r in requests]


def test_a_killed_engine_actor_is_restarted_and_its_batch_retried(german, tmp_path):
    import ray
    from ray import cloudpickle

    from engine.decisions import EnginePools

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        cases = german.subset(per_class=20, seed=0)
        requests = build_requests(cases, "m", "baseline")
        engines = {"m": (EngineConfig("unused", "m"), 1)}
        store = DecisionStore(tmp_path)
        pools = EnginePools()
        killed = []

        def kill_the_actor_once_it_works():
            while not pools.actors.get("m") or len(store.shards()) < 2:
                time.sleep(0.05)
            pid = ray.get(pools.actors["m"][0].pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        killer = threading.Thread(target=kill_the_actor_once_it_works, daemon=True)
        killer.start()
        n = run_decisions(requests, store, engines, batch_size=4, temperature=0.0, seed=0,
                          cache_root=str(tmp_path), progress=False, pools=pools,
                          decider_cls=SlowDeciderTestDouble)
        killer.join(timeout=10)
        new_pid = ray.get(pools.actors["m"][0].pid.remote())
        pools.kill()
    finally:
        ray.shutdown()
    assert killed and new_pid != killed[0]  # Ray restarted the actor
    keys = raw_keys(store)
    assert n == 40 and len(keys) == 40 and len(set(keys)) == 40


def test_a_killed_simulated_run_of_many_shards_resumes_with_every_key_once(tmp_path):
    """200,000 simulated decisions (the stage writes 50,000 to a shard) killed
    with -9 after the first shard: the re-run computes only the rest, and the
    store holds every key once (`benchmarks/scale.py` does the same at a million)."""
    from engine.decisions.backends._simulated import SHARD_ROWS

    sys.path.insert(0, str(ROOT / "examples" / "tenancy"))
    from make_tenancy import applications

    n = 100_000
    cases = applications(__import__("numpy").random.default_rng(0), n)
    cases["application"] = [f"T{i:06d}" for i in range(n)]
    cases["agent_decision"] = ["Offer" if i % 3 else "Decline" for i in range(n)]
    cases.to_csv(tmp_path / "tenancy.csv", index=False)
    (tmp_path / "tenancy.yaml").write_text(
        (ROOT / "examples" / "tenancy" / "tenancy.yaml").read_text())
    args = [sys.executable, "-m", "engine.cli", "run", "examples/tenancy/job.yaml",
            "--no-progress", "--set", f"dataset.cases={tmp_path / 'tenancy.yaml'}",
            "--set", "models=[simulated:cos=0.8,simulated:cos=0.5]", "--set",
            "conditions=[baseline]", "--set", "imports=[]", "--set", "counterfactual=null",
            "--set", "statistics.bootstrap=10", "--set", "statistics.permutations=10",
            "--set", f"output.run_dir={tmp_path / 'run'}",
            "--set", f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    store = DecisionStore(tmp_path / "run")
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not store.shards():
            assert driver.poll() is None and time.time() < deadline, "no shard written"
            time.sleep(0.02)
    finally:
        for pid in session_pids(driver.pid):
            os.kill(pid, signal.SIGKILL)
        driver.wait(timeout=60)
    partial = raw_keys(store)
    assert len(partial) % SHARD_ROWS == 0 and 0 < len(partial) < 2 * n
    assert len(set(partial)) == len(partial)

    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{2 * n - len(partial)} computed now, {len(partial)} reused" in rerun.stdout
    keys = raw_keys(store)
    assert len(keys) == 2 * n and len(set(keys)) == 2 * n  # every key, exactly once
    assert set(partial) <= set(keys)
