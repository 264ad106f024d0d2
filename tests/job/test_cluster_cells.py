"""A job on a real multi-node Ray cluster: a head and a second node started with
`ray start` on 127.0.0.1 (cluster/local_head.sh and cluster/local_node.sh, one
CPU each, token auth), stopped by PID (never `ray stop`). The job joins it
through RAY_ADDRESS; its cells' statistics run as Ray tasks on both nodes, and
every number equals the same job's in one process."""

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import free_port, stop_session

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

#: Asks Ray how many nodes of the cluster at argv[1] are alive.
NODES = r"""
import sys, ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
"""


@pytest.fixture(scope="module")
def cluster():
    """(the GCS address, the environment that reaches it) of a two-node cluster."""
    tmp = Path(tempfile.mkdtemp(prefix="lan", dir="/tmp"))  # short: Ray's socket paths
    dash, gcs = free_port(), free_port()
    env = dict(os.environ, RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_AUTH_MODE="token",
               RAY_TMPDIR=str(tmp), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    procs = [subprocess.Popen([str(ROOT / "cluster" / "local_head.sh"), str(dash), str(gcs), "1"],
                              env=env, stdout=open(tmp / "head.log", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)]
    address = f"127.0.0.1:{gcs}"
    try:
        deadline = time.time() + 180
        while True:
            assert time.time() < deadline, "the two-node cluster did not come up in 180 s"
            assert procs[0].poll() is None, (tmp / "head.log").read_text()[-2000:]
            alive = subprocess.run([sys.executable, "-c", NODES, address], env=env,
                                   capture_output=True, text=True, timeout=120)
            nodes = int(alive.stdout.split()[-1]) if alive.returncode == 0 else 0
            if nodes == 1 and len(procs) == 1:  # the head is up: the second node joins
                procs.append(subprocess.Popen(
                    [str(ROOT / "cluster" / "local_node.sh"), str(gcs), "1"], env=env,
                    stdout=open(tmp / "node.log", "w"), stderr=subprocess.STDOUT,
                    start_new_session=True))
            if nodes == 2:
                break
            time.sleep(1)
        yield address, env
    finally:
        for proc in reversed(procs):
            stop_session(proc)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path, env: dict) -> subprocess.CompletedProcess:
    """Two simulated decision-makers x two conditions on 200 German Credit cases."""
    tmp.mkdir(parents=True)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "jobs/german_credit_demo.yaml", "--no-progress",
         "--set", "models=[simulated:org,simulated:cos=0.5]",
         "--set", "conditions=[baseline,org_externalized]", "--set", "dataset.subset.per_class=100",
         "--set", "statistics.bootstrap=100", "--set", "statistics.permutations=100",
         "--set", f"output.run_dir={tmp / 'run'}",
         "--set", f"output.tracking_uri=sqlite:///{tmp / 'mlflow.db'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_cells_run_as_tasks_on_both_nodes_with_the_numbers_of_one_process(cluster, tmp_path):
    address, env = cluster
    on_cluster = run(tmp_path / "cluster", {**env, "RAY_ADDRESS": address})
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    assert "the cells as Ray tasks spread over the cluster's 2 nodes" in on_cluster.stdout
    line = next(ln for ln in on_cluster.stdout.splitlines() if ln.startswith("statistics ran on"))
    assert line.startswith("statistics ran on 2 node(s) of the cluster"), line

    alone = {k: v for k, v in env.items() if not k.startswith("RAY_")}
    here = run(tmp_path / "here", alone)
    assert here.returncode == 0, here.stderr[-3000:]
    assert "Ray tasks" not in here.stdout
    for name in ("summary.csv",):
        a = pd.read_csv(tmp_path / "cluster" / "run" / name)
        b = pd.read_csv(tmp_path / "here" / "run" / name)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    tables = sorted((tmp_path / "here" / "run" / "cells").glob("*/policies.csv"))
    assert len(tables) == 4
    for table in tables:
        twin = tmp_path / "cluster" / "run" / table.relative_to(tmp_path / "here" / "run")
        pd.testing.assert_frame_equal(pd.read_csv(table), pd.read_csv(twin), check_exact=True)
