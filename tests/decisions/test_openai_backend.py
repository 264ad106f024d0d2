"""The openai backend against real HTTP servers on 127.0.0.1.

* a local server that fails some requests with 429 / 500 / a stall (bounded):
  the run still ends with every decision, and the key never leaves the header;
* vLLM's own OpenAI-compatible server hosting the bundled model (slow).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_drawn_from_probabilities, free_port

from engine.decisions.backends._draw import summed_logprobs
from engine.decisions.backends._openai import choice_token_logprobs
from engine.decisions import DecisionStore
from engine.job import run_job
from engine.spec import load_job

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-lensaudit-test-0123456789abcdef"


def test_choice_logprobs_sum_prefix_tokens_per_choice():
    top = [{"token": "Good", "logprob": np.log(0.5)}, {"token": " G", "logprob": np.log(0.1)},
           {"token": "Bad", "logprob": np.log(0.3)}, {"token": "maybe", "logprob": np.log(0.1)}]
    lp = summed_logprobs(choice_token_logprobs(top, ("Good", "Bad")))
    assert lp["Good"] == pytest.approx(np.log(0.6)) and lp["Bad"] == pytest.approx(np.log(0.3))
    assert choice_token_logprobs([{"token": "B", "logprob": -1.0}],
                                 ("Bad", "Better")) == {}  # ambiguous


class FlakyOpenAI(BaseHTTPRequestHandler):
    """Answers like an OpenAI server; each distinct prompt first fails (429, then 500,
    then a stall past the client's timeout) a bounded number of times."""

    attempts: dict = {}
    auth: set = set()
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FlakyOpenAI.auth.add(self.headers.get("Authorization"))
        key = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()
        with FlakyOpenAI.lock:
            n = FlakyOpenAI.attempts[key] = FlakyOpenAI.attempts.get(key, 0) + 1
        failures = int(key, 16) % 4  # 0 to 3 failures per prompt, bounded
        if n <= failures:
            kind = ("429", "500", "stall")[n - 1]
            if kind == "stall":
                time.sleep(1.5)
                return self._send(200, {"late": True})
            return self._send(int(kind), {"error": kind}, {"Retry-After": "0"})
        good = int(key, 16) % 3 != 0
        answer = "Good" if good else "Bad"
        top = [{"token": "Good", "logprob": float(np.log(0.8 if good else 0.3))},
               {"token": "Bad", "logprob": float(np.log(0.2 if good else 0.7))}]
        self._send(200, {"choices": [{"message": {"content": answer},
                                      "logprobs": {"content": [{"token": answer,
                                                                "logprob": top[0]["logprob"],
                                                                "top_logprobs": top}]}}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 1}})

    def _send(self, status, payload, headers=()):
        data = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in dict(headers).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_flaky_server_run_ends_with_every_decision_and_the_key_stays_secret(tmp_path,
                                                                            monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("LENSAUDIT_TEST_KEY", SECRET)
    try:
        spec = load_job("jobs/german_credit_demo.yaml", [
            "models=[openai:flaky-model]",
            f"models.0.base_url=http://127.0.0.1:{server.server_port}/v1",
            "models.0.api_key_env=LENSAUDIT_TEST_KEY", "models.0.timeout_s=0.5",
            "models.0.max_concurrency=4", "models.0.max_retries=5",
            "dataset.subset.per_class=10", "statistics.bootstrap=50",
            "statistics.permutations=50", f"output.run_dir={tmp_path / 'run'}",
            f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
        res = run_job(spec, progress=False, log=lambda *_: None)
    finally:
        server.shutdown()
    d = DecisionStore(res.run_dir).load()
    assert len(d) == 20 and set(d["backend"]) == {"openai"}
    assert max(FlakyOpenAI.attempts.values()) >= 3  # retries happened (429, 500, stall)
    # Each answer is drawn from the probabilities the server gave (0.8 or 0.3 for
    # "Good"), with the case's own number, whatever the server's sampled answer was.
    assert set(np.round(d["p_positive"], 6)) == {0.8, 0.3}
    assert_drawn_from_probabilities(d, temperature=spec.decision.temperature)
    assert FlakyOpenAI.auth == {f"Bearer {SECRET}"}
    for f in [*res.run_dir.rglob("*"), tmp_path / "mlflow.db"]:
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


class OneAnswerOpenAI(FlakyOpenAI):
    """Answers "Bad" to everything, at once, and returns no log-probabilities."""

    def do_GET(self):  # the plan's reachability probe
        self._send(200, {"data": []})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, {"choices": [{"message": {"content": "Bad"}}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 1}})


def test_introspection_without_a_baseline_policy_is_refused_before_its_decisions(tmp_path,
                                                                                 monkeypatch):
    """One answer and no probabilities: no policy to tell the model about, hard or
    soft, so its introspective cell is refused in one line and nothing is asked."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), OneAnswerOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("LENSAUDIT_TEST_KEY", SECRET)
    logs = []
    try:
        spec = load_job("jobs/german_credit_demo.yaml", [
            "models=[openai:one-answer]", "conditions=[introspective]",
            f"models.0.base_url=http://127.0.0.1:{server.server_port}/v1",
            "models.0.api_key_env=LENSAUDIT_TEST_KEY", "dataset.subset.per_class=10",
            "statistics.bootstrap=50", "statistics.permutations=50",
            f"output.run_dir={tmp_path / 'run'}",
            f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
        res = run_job(spec, progress=False, log=logs.append)
    finally:
        server.shutdown()
    refused = [line for line in logs if "introspective refused" in line]
    assert len(refused) == 1
    assert "its baseline policy is undefined" in refused[0]
    assert "its backend gave no probability of the answer" in refused[0]
    assert [(c.model, c.condition) for c in res.cells] == [("openai:one-answer", "baseline")]
    assert res.cells[0].soft is None
    assert set(DecisionStore(res.run_dir).load()["condition"]) == {"baseline"}


def test_missing_key_variable_is_named(tmp_path, monkeypatch):
    from engine.errors import LensauditError

    monkeypatch.delenv("LENSAUDIT_NO_SUCH_KEY", raising=False)
    spec = load_job("jobs/german_credit_demo.yaml", [
        "models=[openai:m]", "models.0.base_url=http://127.0.0.1:9/v1",
        "models.0.api_key_env=LENSAUDIT_NO_SUCH_KEY", "dataset.subset.per_class=5",
        f"output.run_dir={tmp_path / 'run'}"])
    with pytest.raises(LensauditError, match="LENSAUDIT_NO_SUCH_KEY is not set"):
        run_job(spec, progress=False, log=lambda *_: None)


@pytest.mark.slow
def test_vllm_openai_server_of_the_bundled_model(tmp_path, bundled_model_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("LENSAUDIT_TEST_KEY", SECRET)
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_CACHE_ROOT=str(tmp_path / "vllm"),
               VLLM_API_KEY=SECRET)
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
         bundled_model_path, "--served-model-name", "smollm2", "--host", "127.0.0.1",
         "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
         "--gpu-memory-utilization", "0.3"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"),
        start_new_session=True)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None, "vLLM server exited"
                time.sleep(0.5)
        else:
            pytest.fail("vLLM server not ready in 300 s")
        spec = load_job("jobs/german_credit_demo.yaml", [
            "models=[openai:smollm2]", f"models.0.base_url=http://127.0.0.1:{port}/v1",
            "models.0.api_key_env=LENSAUDIT_TEST_KEY", "dataset.subset.per_class=5",
            "statistics.bootstrap=50", "statistics.permutations=50",
            f"output.run_dir={tmp_path / 'run'}",
            f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
        res = run_job(spec, progress=False, log=lambda *_: None)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    d = DecisionStore(res.run_dir).load()
    assert len(d) == 10 and set(d["choice"]) <= {"Good", "Bad"}
    assert d["p_positive"].between(0, 1).all()  # the server returned the choice log-probabilities
    assert_drawn_from_probabilities(d, temperature=spec.decision.temperature)
    for f in [*res.run_dir.rglob("*"), tmp_path / "mlflow.db"]:
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
