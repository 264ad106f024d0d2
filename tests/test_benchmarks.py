"""Every script in `benchmarks/` runs, at its smallest setting.

Benchmarks are never timed assertions; this only checks that each one still
runs to its printed table on today's code (a changed return type once left
`refits.py` failing unseen, with the README's headline figure from it).
A new script without a setting here fails `test_every_benchmark_has_a_smoke_setting`.

The scripts run as programs. Those without an engine run three at a time
(most of each is starting Python and JAX, which leaves a core idle); the two
that start vLLM run in one process on one engine (a start costs about 35 s
on 2 cores).
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

#: script -> (its smallest arguments, a fragment its output must hold)
SMOKE = {
    "refits.py": (["--sizes", "60x5", "--B", "16", "--sklearn-fits", "4"], "x lbfgs"),
    "bound_limit.py": (["--gaussian", "0.1", "--point", "120,5,1", "--directions", "2",
                        "--reps", "4"], "clipped"),
    "calibration.py": (["--point", "200,5,1.3,0.5", "--reps", "3", "--world", "20",
                        "--bootstrap", "8", "--null-sets", "4"], "permutation test under the null"),
    "world_width.py": (["--point", "200,5,1,0.5", "--reps", "6", "--world", "20"],
                       "world's sd median"),
    "audit.py": (["--models", "1", "--per-class", "15", "--bootstrap", "10", "--permutations", "10",
                  "--workers", "1", "--baseline", "HEAD", "--once"], "speed-up"),
    "view.py": (["--cases", "60"], "first render"),
    "scale.py": (["--decisions", "400", "--pipeline-baseline", "HEAD", "--sizes", "200",
                  "--bootstrap", "10", "--baseline", "HEAD", "--compare-at", "200", "--seeds", "2"],
                 "store, every key once"),
    "choice_probabilities.py": (["--cases", "2", "--samples", "2"], "p_positive"),
    # (b), lensaudit's own engine in a Ray actor, is what tests/decisions runs
    # throughout: its smoke would cost a second engine start.
    "decisions.py": (["--n", "4", "--slow-n", "1", "--batch", "2", "--paths", "acd",
                      "--reasoning-tokens", "4"], "(d) transformers"),
}
#: Scripts that start a vLLM engine, in the order they share one (decisions.py
#: shuts its engine down when done, so it comes last).
ENGINES = ["choice_probabilities.py", "decisions.py"]

#: Runs the ENGINES scripts as `__main__` in one process; every VLLMDecider they
#: make is the first one (same bundled model; the scripts read its `llm` and
#: sampling parameters, nothing of its name).
ONE_ENGINE = r"""
import runpy, sys
from engine.decisions.backends import _vllm

made = []
class Shared(_vllm.VLLMDecider):
    def __new__(cls, *args, **kwargs):
        return made[0] if made else super().__new__(cls)
    def __init__(self, *args, **kwargs):
        if not made:
            super().__init__(*args, **kwargs)
            made.append(self)
_vllm.VLLMDecider = Shared
import engine.decisions.backends as backends
backends.VLLMDecider = Shared
for script, *args in (line.split("\t") for line in sys.argv[1:]):
    print(f"=== {script}", flush=True)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
"""


def _env(tmp_path: Path) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", VLLM_CACHE_ROOT=str(tmp_path / "vllm"),
                PYTHONUNBUFFERED="1")


def _failure(script: str, done: subprocess.CompletedProcess, expected: str) -> str | None:
    if done.returncode != 0:
        return f"{script}: exit {done.returncode}\n{done.stdout[-1500:]}\n{done.stderr[-2500:]}"
    if expected not in done.stdout:
        return f"{script}: no '{expected}' in its output\n{done.stdout[-2500:]}"
    return None


def test_every_benchmark_has_a_smoke_setting():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")}
    assert scripts == set(SMOKE), f"benchmarks without a smoke setting: {scripts - set(SMOKE)}"


def test_benchmarks_without_an_engine_run(tmp_path):
    def run(script: str) -> str | None:
        args, expected = SMOKE[script]
        folder = tmp_path / script.removesuffix(".py")
        folder.mkdir()
        done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=folder,
                              env=_env(folder), capture_output=True, text=True, timeout=600)
        return _failure(script, done, expected)

    with ThreadPoolExecutor(3) as pool:
        failures = [f for f in pool.map(run, [s for s in SMOKE if s not in ENGINES]) if f]
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_benchmarks_with_an_engine_run_on_one(tmp_path, bundled_model_path):
    lines = ["\t".join([str(BENCHMARKS / s), *SMOKE[s][0]]) for s in ENGINES]
    done = subprocess.run([sys.executable, "-c", ONE_ENGINE, *lines], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    parts = done.stdout.split("=== ")[1:]
    assert [p.split("\n", 1)[0] for p in parts] == [str(BENCHMARKS / s) for s in ENGINES]
    for script, part in zip(ENGINES, parts):
        assert SMOKE[script][1] in part, f"{script}: {part[-2000:]}"
