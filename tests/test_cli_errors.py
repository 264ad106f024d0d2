"""Bad input: one line naming the problem, exit code 2, no traceback."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "jobs" / "german_credit_demo.yaml"


def lensaudit(*args, cwd):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.yaml"
    shutil.copy(DEMO, path)
    return path


CASES = {
    "missing data file": (["--set", "dataset.path=/no/such/german.data"], "data file not found: /no/such"),
    "unknown key": (["--set", "statistics.colour=red"], "statistics.colour: unknown key"),
    "wrong type": (["--set", "statistics.bootstrap=many"], "statistics.bootstrap"),
    "unknown model": (["--set", "models=[nowhere:model]"], "unknown model 'nowhere:model'"),
    "unknown bundled model": (["--set", "models=[bundled:gpt-9]"], "unknown model 'bundled:gpt-9'"),
    "unknown condition": (["--set", "conditions=[telepathic]"], "unknown condition 'telepathic'"),
    "KV block vLLM-CPU refuses": (
        ["--set", "models=[{name: bundled:smollm2-135m, kv_block_size: 16}]"],
        "models.0.kv_block_size"),
}


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2(job, tmp_path, name, dry_run):
    extra, expected = CASES[name]
    args = ["run", str(job), *extra] + (["--dry-run"] if dry_run else [])
    out = lensaudit(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert expected in lines[0]


def test_invalid_yaml_and_missing_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: [unclosed\n")
    for target, expected in [(bad, "invalid YAML"), (tmp_path / "none.yaml", "job file not found")]:
        for flag in ([], ["--dry-run"]):
            out = lensaudit("run", str(target), *flag, cwd=tmp_path)
            assert out.returncode == 2 and expected in out.stderr
            assert len(out.stderr.strip().splitlines()) == 1


def test_dry_run_prints_the_plan_without_a_model(job, tmp_path):
    out = lensaudit("run", str(job), "--dry-run", "--set", "dataset.subset.per_class=5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "1 cell(s) x 10 cases" in out.stdout
    assert "10 in all, 0 already done, 10 to compute" in out.stdout
