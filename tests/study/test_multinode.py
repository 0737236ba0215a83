"""A multi-node Ray cluster on 127.0.0.1 (a head without CPUs for trials, two worker
nodes with the custom resource "worker"; tests/cluster_host.py), a real S3 API (moto's
server) as the only storage: no disk is shared for checkpoints or results. The sweep
is a job submitted with `ray job submit` (the command of docs/cluster.md), a job
stopped and resumed as a new one, and a sweep that loses a worker node mid-trial."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures import free_port, start_mlflow_server, start_s3_server, wait_for_port

from analysis.bucket import get_bytes, listing, open_fs

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "s3://sweeps/cluster"
PACKAGES = ("study", "trainables", "analysis", "search_spaces")


class Cluster:
    def __init__(self, env: dict, temp_dir: str):
        self.env, self.temp_dir = env, temp_dir
        self.dashboard = free_port()
        self.host = subprocess.Popen([sys.executable, str(ROOT / "tests" / "cluster_host.py"), str(self.dashboard),
                                      "2", temp_dir], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, start_new_session=True, cwd="/")
        info = json.loads(self.host.stdout.readline())
        self.address, self.url, self.nodes = info["address"], info["dashboard"], info["nodes"]

    def ask(self, command: str):
        self.host.stdin.write(command + "\n")
        self.host.stdin.flush()
        return json.loads(self.host.stdout.readline())

    def stop(self):
        try:
            self.host.communicate("stop\n", timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.host.pid, signal.SIGKILL)
            self.host.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    server, aws = start_s3_server(free_port())
    # every node has the AWS variables (on a real cluster: an instance role or the same env)
    # and the project's Python first on PATH (a job's `python`)
    env = {**os.environ, **aws, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("STUDY_FAULTS", None)
    port = free_port()
    tracking = start_mlflow_server(tmp_path_factory.mktemp("tracking"), port)   # starts while the cluster does
    running = Cluster(env, tempfile_short())
    running.mlflow = f"http://127.0.0.1:{port}"
    wait_for_port(port, 90)
    _wait(lambda: _job_api_ready(running), 120, "the head's job agent")

    yield running
    running.stop()
    for process in (server, tracking):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def tempfile_short() -> str:
    import tempfile
    return tempfile.mkdtemp(prefix="mn", dir="/tmp")          # Ray's socket paths stay short


def driver_folder(tmp_path: Path) -> Path:
    """A copy of the project's packages, the driver's working directory: the worker nodes
    never see it (nor the checkout), so they can only import what Ray ships them."""
    folder = tmp_path / "driver"
    folder.mkdir()
    for package in PACKAGES:
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _aws(cluster):
    """This process pointed at the cluster's S3 server, for one read."""
    from unittest import mock
    return mock.patch.dict(os.environ, {k: v for k, v in cluster.env.items() if k.startswith("AWS_")})


def _bucket(cluster, name: str) -> dict:
    with _aws(cluster):
        filesystem, root = open_fs(f"{BUCKET}/{name}")
        return {i.path[len(root) + 1:]: i for i in listing(filesystem, root)}


def _rows(cluster, name: str):
    from analysis.results import load_results
    with _aws(cluster):
        return load_results(f"{BUCKET}/{name}")


def _job_command(cluster, name: str) -> list[str]:
    """docs/cluster.md's job command, pointed at this cluster and bucket."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    command = re.search(r"```bash\n(ray job submit [^\n]*)\n```", text).group(1)
    command = (command.replace("http://127.0.0.1:8265", cluster.url).replace("s3://my-bucket/sweeps", BUCKET)
               .replace("http://127.0.0.1:5000", cluster.mlflow).replace("kpcl-1", name)
               # the cluster's own address, not `auto`: with the test session's Ray on the same
               # machine, Ray's job supervisor resolves `auto` to that other cluster
               .replace("--address auto", f"--address {cluster.address}"))
    return command.split()


def _ray(cluster, *argv, timeout=300, cwd=None):
    return subprocess.run([str(Path(sys.executable).parent / "ray"), *argv], env=cluster.env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _job_api_ready(cluster) -> bool:
    """Whether the head takes jobs: its dashboard agent starts seconds after the node."""
    from ray.job_submission import JobSubmissionClient
    try:
        client = JobSubmissionClient(cluster.url)
        job = client.submit_job(entrypoint="true")
    except Exception:                             # "No available agent to submit job", or not up yet
        return False
    _wait(lambda: str(client.get_job_status(job).value) in ("SUCCEEDED", "FAILED"), 60, "the probe job")
    return True


def _status(cluster, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient
    return str(JobSubmissionClient(cluster.url).get_job_status(submission_id).value)


def test_a_sweep_submitted_as_a_ray_job_runs_on_the_workers_into_the_bucket(cluster, tmp_path):
    command = _job_command(cluster, "job1")
    done = _ray(cluster, *command[1:], cwd=driver_folder(tmp_path))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert _status(cluster, "job1") == "SUCCEEDED"
    rows = _rows(cluster, "job1")
    assert len(rows) == 4 and set(rows["status"]) == {"ok"} and rows["trial_id"].is_unique
    assert "report/report.md" in _bucket(cluster, "job1")
    from mlflow.tracking import MlflowClient                        # the runs, on the tracking server
    client = MlflowClient(cluster.mlflow)
    runs = client.search_runs([client.get_experiment_by_name("kpcl").experiment_id], "tags.sweep = 'job1'")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and [a.path for a in client.list_artifacts(parent[0].info.run_id)] == ["report"]


def _wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


@pytest.mark.slow      # 53 s; the job path itself is in CI (test_a_sweep_submitted_as_a_ray_job...)
def test_a_stopped_job_is_resumed_as_a_new_job(cluster, tmp_path):
    folder = driver_folder(tmp_path)
    command = _job_command(cluster, "job2")
    at = command.index("--")
    first = [*command[1:at], "--no-wait", *command[at:], "--epochs", "4", "--num-samples", "3",
             "--imbalance-levels", "10", "--max-concurrent", "1"]
    assert _ray(cluster, *first, cwd=folder).returncode == 0
    _wait(lambda: any(k.startswith("results/trials/") for k in _bucket(cluster, "job2")), 240, "a first row")
    assert _ray(cluster, "job", "stop", "--address", cluster.url, "job2").returncode == 0
    _wait(lambda: _status(cluster, "job2") == "STOPPED", 60, "the job stopped")
    kept = _rows(cluster, "job2")
    assert 1 <= len(kept) < 3 and "sweep.lock" not in _bucket(cluster, "job2")   # released on SIGTERM

    resume = [*command[1:at], "--submission-id", "job2-resumed", "--", "python", "-m", "study.sweep", "kpcl",
              "--resume", "job2", "--address", cluster.address, "--storage", BUCKET, "--mlflow-uri", cluster.mlflow]
    resume.pop(resume.index("--submission-id") + 1)                 # the first one: job2
    resume.remove("--submission-id")
    done = _ray(cluster, *resume, cwd=folder)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    rows = _rows(cluster, "job2")
    assert len(rows) == 3 and rows["trial_id"].is_unique and set(rows["status"]) == {"ok"}
    assert set(kept["trial_id"]) <= set(rows["trial_id"])            # nothing written was lost


def test_the_data_root_is_checked_on_a_worker_node(cluster, tmp_path):
    folder = driver_folder(tmp_path)
    sweep = subprocess.run([sys.executable, "-m", "study.sweep", "kpcl", "--smoke", "--dataset", "cifar10",
                            "--data-root", str(tmp_path / "nowhere"), "--address", cluster.address,
                            "--trial-resource", "worker=1", "--storage", BUCKET, "--name", "nodata"],
                           cwd=folder, env=cluster.env, capture_output=True, text=True, timeout=240)
    assert sweep.returncode == 2
    line = sweep.stderr.strip().splitlines()[-1]
    assert line.startswith(f"python -m study.sweep: error: --data-root {tmp_path / 'nowhere'} on node 127.0.0.1 (")
    # the head has no CPU: the check ran on one of the worker nodes
    assert any(f"({n['node_id'][:12]})" in line for n in cluster.nodes), line


@pytest.mark.slow          # about 55 s more (the suite's 15 minutes): bash scripts/test.sh -m slow
def test_a_worker_node_killed_mid_trial_its_trials_continue_on_the_other_from_the_bucket(cluster, tmp_path):
    from trainables.config import TrialConfig, flat_keys
    from trainables.trial import run_trial
    folder = driver_folder(tmp_path)
    argv = ["kpcl", "--smoke", "--imbalance-levels", "10", "--num-samples", "4", "--epochs", "10",
            "--max-concurrent", "2", "--max-failures", "2", "--trial-resource", "worker=1",
            "--address", cluster.address, "--storage", BUCKET, "--name", "kill"]
    started = time.monotonic()
    log = open(tmp_path / "sweep.log", "w")
    sweep = subprocess.Popen([sys.executable, "-m", "study.sweep", *argv], cwd=folder, env=cluster.env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready():
            # node 0 runs a trial, and every started trial without a row has a checkpoint
            on_node = cluster.ask("trials 0")
            objects = _bucket(cluster, "kill")
            if not on_node or "journal.jsonl" not in objects:
                return None
            with _aws(cluster):
                journal = get_bytes(*open_fs(f"{BUCKET}/kill/journal.jsonl")).decode().splitlines()
            running = {json.loads(x)["trial_id"] for x in journal} - {
                k.split("/")[-1][:-8] for k in objects if k.startswith("results/trials/")}
            ckpt = all(any(k.startswith(f"trial_{t}/checkpoint_") for k in objects) for t in running)
            return on_node if running and ckpt else None
        on_node = _wait(ready, 240, "a trial on node 0 with a checkpoint in the bucket")
        killed_at = time.monotonic() - started
        assert cluster.ask("kill 0")["killed"] >= 3                  # raylet, store/agents, the trial's worker
        assert sweep.wait(timeout=400) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    took = time.monotonic() - started

    # the packages came through Ray's runtime environment, not a shared checkout
    shipped = [p for p in on_node[0]["pythonpath"].split(":") if p]
    assert shipped and all(p.startswith(cluster.temp_dir) and "runtime_resources" in p for p in shipped[:len(PACKAGES)])
    assert not any(p.startswith(str(ROOT)) or p.startswith(str(folder)) for p in shipped)

    rows = _rows(cluster, "kill")
    assert len(rows) == 4 and rows["trial_id"].is_unique and set(rows["status"]) == {"ok"}
    resumed = rows[rows["pretrain/resumed_from_epoch"].fillna(0) >= 1]
    assert len(resumed) >= 1                                           # continued from its checkpoint
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")          # the default store: the driver's folder
    runs = client.search_runs([client.get_experiment_by_name("kpcl").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(rows["trial_id"])
    assert all(r.info.status == "FINISHED" for r in runs)

    # a resumed trial's numbers are those of the same trial run without interruption (CPU)
    row = resumed.iloc[0]
    plain = lambda v: None if v is None or (isinstance(v, float) and v != v) else getattr(v, "item", lambda: v)()  # noqa: E731
    config = {k: plain(row[k]) for k in flat_keys() if k in row.index and plain(row[k]) is not None}   # null: unread
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                    # as the trial had (1 CPU): the same float sums
    try:
        fresh = run_trial(TrialConfig.from_flat({**config, "seed": int(row["seed"])}))
    finally:
        torch.set_num_threads(threads)
    for column in ("lt/top1", "lt/balancedness", "balanced/top1"):
        probe, metric = column.split("/")
        assert fresh.probes[probe][metric] == row[column], column
    print(f"\nnode kill: {len(rows)} trials, {len(rows)} rows, {len(resumed)} resumed, killed at "
          f"{killed_at:.1f} s, sweep {took:.1f} s")
