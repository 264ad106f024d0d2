"""`lensaudit submit`: run a job on a Ray cluster through the Jobs API.

The working tree (code, jobs, shipped data) is uploaded as the job's working
directory and the entrypoint is `lensaudit run JOB`. Environment variables are
passed by NAME only when asked (`--env NAME`); their values are read from the
submitting shell and never printed. API keys are better set on the cluster's
nodes: the job names the variable (api_key_env), not the value. Ray's token
auth (RAY_AUTH_MODE=token) reads RAY_AUTH_TOKEN from the environment.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from engine.errors import LensauditError
from engine.servers import probe_http

#: Never uploaded: environments, results, caches.
EXCLUDES = [".venv", ".git", "runs", "mlruns", "mlartifacts", "mlflow.db", "mlflow_server",
            "*.egg-info", "__pycache__", ".pytest_cache", "*.parquet"]


#: `--install EXTRA`: the job's runtime environment installs the uploaded
#: working tree with that extra (Ray expands the placeholder to where it
#: unpacked the tree), so a cluster running Ray's own image needs nothing baked in.
INSTALL = {"gpu": "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}[gpu]",
           "cpu": "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}[cpu]"}


def build_submission(job: str, sets: list[str], env_names: list[str], root: Path, *,
                     install: str | None = None, submission_id: str | None = None) -> dict:
    from engine.spec import load_job

    load_job(job, sets)  # fail here, not on the cluster
    rel = os.path.relpath(Path(job).resolve(), root)
    if rel.startswith(".."):
        raise LensauditError(f"{job}: the job file must be inside the working tree {root}")
    missing = [n for n in env_names if n not in os.environ]
    if missing:
        raise LensauditError(f"--env {missing[0]}: not set in this shell")
    cmd = ["lensaudit", "run", rel, "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    env = {"HF_HUB_OFFLINE": "1", **{n: os.environ[n] for n in env_names}}
    runtime_env = {"working_dir": str(root), "excludes": EXCLUDES, "env_vars": env}
    if install is not None:
        if install not in INSTALL:
            raise LensauditError(f"--install {install}: use one of {', '.join(INSTALL)}")
        runtime_env["pip"] = [INSTALL[install]]
    out = {"entrypoint": shlex.join(cmd), "runtime_env": runtime_env,
           "metadata": {"lensaudit.job": rel, "lensaudit.env": ",".join(env_names)}}
    if submission_id:  # a KubeRay RayJob in InteractiveMode waits for this id
        out["submission_id"] = submission_id
    return out


def submit(job: str, address: str, *, sets=(), env_names=(), wait: bool = True,
           root: Path | None = None, log=print, install: str | None = None,
           submission_id: str | None = None) -> tuple[str, str]:
    """Submit; with `wait`, stream the job's logs until it ends. Returns (id, status)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    root = (root or Path.cwd()).resolve()
    token = os.environ.get("RAY_AUTH_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None  # RAY_AUTH_MODE=token heads
    sub = build_submission(job, list(sets), list(env_names), root, install=install,
                           submission_id=submission_id)
    url = address if "://" in address else f"http://{address}"
    reason = probe_http(url.rstrip("/") + "/api/version")  # Ray's client waits for minutes
    if reason:
        raise LensauditError(f"Ray dashboard at {address} is not reachable ({reason}); start the "
                             "cluster's head, or give --address http://HOST:8265")
    try:
        client = JobSubmissionClient(address, headers=headers)
        job_id = client.submit_job(**sub)
    except LensauditError:
        raise
    except Exception as exc:
        raise LensauditError(f"cannot submit to {address}: {str(exc).splitlines()[0]}") from None
    log(f"submitted {job_id} to {address}: {sub['entrypoint']}")
    if env_names:
        log(f"environment passed by name: {', '.join(env_names)} (values not shown)")
    if not wait:
        return job_id, "SUBMITTED"
    seen = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > seen:
            sys.stdout.write(logs[seen:])
            seen = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return job_id, str(status.value if hasattr(status, "value") else status)
        time.sleep(1.0)


def _cmd_submit(args) -> int:
    job_id, status = submit(args.job, args.address, sets=args.set or [],
                            env_names=args.env or [], wait=not args.no_wait,
                            install=args.install, submission_id=args.submission_id)
    print(f"job {job_id}: {status}")
    return 0 if status in ("SUCCEEDED", "SUBMITTED") else 1


def add_submit_parser(sub) -> None:
    p = sub.add_parser("submit", help="run a job on a Ray cluster (Ray Jobs API)")
    p.add_argument("job", help="job YAML inside this working tree")
    p.add_argument("--address", required=True, help="dashboard address, http://HOST:8265")
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    p.add_argument("--env", action="append", metavar="NAME",
                   help="pass this environment variable to the job (value never printed)")
    p.add_argument("--no-wait", action="store_true", help="return after submitting")
    p.add_argument("--install", choices=sorted(INSTALL),
                   help="install the uploaded tree with this extra in the job's runtime "
                   "environment (a cluster on Ray's own image, e.g. cluster/raycluster.yaml)")
    p.add_argument("--submission-id", metavar="ID",
                   help="the job's id (a KubeRay RayJob in InteractiveMode waits for it)")
    p.set_defaults(func=_cmd_submit)
