"""Every script in `benchmarks/` runs, at its smallest setting.

Benchmarks are never timed assertions; this only checks that each one still
runs to its printed table on today's code (a changed return type once left
`refits.py` failing for weeks, with the README's headline figure from it).
A new script without a setting here fails `test_every_benchmark_has_a_smoke_setting`.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

#: script -> (its smallest arguments, a line fragment its output must hold)
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
    "scale.py": (["--sizes", "200,400", "--bootstrap", "10", "--baseline", "HEAD"],
                 "largest difference of any statistic"),
    "choice_probabilities.py": (["--cases", "2", "--samples", "2"], "p_positive"),
    # (b), lensaudit's own engine in a Ray actor, is what tests/decisions runs
    # throughout: its smoke would cost a second engine start.
    "decisions.py": (["--n", "4", "--slow-n", "1", "--batch", "2", "--paths", "acd",
                      "--reasoning-tokens", "4"], "(d) transformers"),
}
#: Scripts that start a vLLM engine (about a minute each on 2 cores).
ENGINES = {"choice_probabilities.py", "decisions.py"}


def test_every_benchmark_has_a_smoke_setting():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")}
    assert scripts == set(SMOKE), f"benchmarks without a smoke setting: {scripts - set(SMOKE)}"


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in ENGINES
                                    else s for s in SMOKE])
def test_benchmark_runs_at_its_smallest_setting(script, tmp_path, bundled_model_path):
    args, expected = SMOKE[script]
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_CACHE_ROOT=str(tmp_path / "vllm"),
               PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
