"""A sweep whose storage is a bucket: moto's S3 server on 127.0.0.1 (a real S3 API over
HTTP), the harness pointed at it with the standard AWS variables, nothing mocked in
the harness. The sweeps run as the command a user types, each in its own process
(with its own local Ray, started with the AWS variables as a user's would be)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from fixtures import free_port, make_bucket, start_s3_server

from analysis.bucket import get_bytes, listing, open_fs, put_bytes
from study.sweep import main

SWEEP = ["kpcl", "--smoke", "--num-samples", "2", "--imbalance-levels", "10", "--max-concurrent", "1"]
BUCKET = "s3://sweeps/team"


@pytest.fixture(scope="module")
def s3():
    server, env = start_s3_server(free_port())
    yield env
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def _run(env, cwd, module, *argv, timeout=300):
    full = {**os.environ, **env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    full.pop("STUDY_FAULTS", None)
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout)


def _objects(env, uri):
    """Every object under `uri` by its key (this process is pointed at the server: `aws`)."""
    filesystem, root = open_fs(uri)
    return {i.path[len(root) + 1:]: i for i in listing(filesystem, root)}


@pytest.fixture()
def aws(s3, monkeypatch):
    """This process pointed at the S3 server (for in-process reads and refusals)."""
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    return s3


def test_a_sweep_in_a_bucket_runs_resumes_elsewhere_and_reports_from_the_bucket(aws, tmp_path):
    from analysis.results import load_results
    first, second = tmp_path / "laptop", tmp_path / "other-machine"
    first.mkdir(), second.mkdir()
    done = _run(aws, first, "study.sweep", *SWEEP, "--storage", BUCKET, "--name", "b")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"results (Parquet): {BUCKET}/b/results" in done.stdout
    # nothing of the sweep on the local disk: the MLflow and Optuna stores (printed), the lock
    # their creation took, and MLflow's artifacts only
    assert sorted(p.name for p in first.iterdir()) == ["mlartifacts", "mlflow.db", "mlflow.db.lock", "optuna.db",
                                                       "optuna.db.lock"]
    assert f"sqlite:///{first}/mlflow.db" in done.stdout and f"sqlite:///{first}/optuna.db" in done.stdout
    objects = _objects(aws, f"{BUCKET}/b")
    for key in ("sweep.json", "journal.jsonl", "mlflow.json", "results/trials.parquet", "report/report.md"):
        assert key in objects, key
    assert any(k.startswith("trial_") and k.endswith("/state.pt") for k in objects)   # Tune's checkpoints
    assert not any("/." in "/" + k and ".tmp-" in k for k in objects)                 # no torn uploads
    assert "sweep.lock" not in objects                                                 # released

    rows = load_results(f"{BUCKET}/b").sort_values("trial_id")
    assert len(rows) == 2 and set(rows["status"]) == {"ok"}
    lost = rows.iloc[0]
    filesystem, root = open_fs(f"{BUCKET}/b")
    for kind in ("trials", "history"):                     # a trial whose row never arrived
        filesystem.delete_file(f"{root}/results/{kind}/{lost['trial_id']}.parquet")

    again = _run(aws, second, "study.sweep", "kpcl", "--resume", "b", "--storage", BUCKET)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming b: 1 of 2 trials" in again.stderr
    assert "a new parent run is opened" in again.stdout     # this folder's store never held the sweep
    after = load_results(f"{BUCKET}/b")
    assert len(after) == 2 and lost["trial_id"] not in set(after["trial_id"])
    new = after[~after["trial_id"].isin(rows["trial_id"])].iloc[0]
    assert new["pretrain/resumed_from_epoch"] == 1        # from its checkpoint in the bucket
    for column in ("lt/top1", "lt/balancedness", "balanced/top1", "pretrain/final_loss"):
        assert new[column] == lost[column], column
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{second}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("kpcl").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(after["trial_id"])
    assert all(r.info.status == "FINISHED" for r in runs)
    # this folder's Optuna storage never held the sweep: its study is rebuilt from the journal
    import optuna
    study = optuna.load_study(study_name="b:ratio=10", storage=f"sqlite:///{second}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]

    before = objects["report/report.md"].mtime
    report = _run(aws, tmp_path, "analysis.report", f"{BUCKET}/b")
    assert report.returncode == 0, report.stderr[-2000:]
    assert report.stdout.strip() == f"report: {BUCKET}/b/report/report.md"
    text = get_bytes(filesystem, f"{root}/report/report.md").decode()
    assert _objects(aws, f"{BUCKET}/b")["report/report.md"].mtime > before and "## Figures" in text


def _refused(argv, capsys, seconds=10.0):
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    took = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and took < seconds, (took, err)
    return err[-1]


def test_an_endpoint_that_does_not_answer_is_refused_in_seconds(aws, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")     # nothing listens
    line = _refused([*SWEEP, "--storage", BUCKET], capsys)
    assert "--storage s3://sweeps/team: cannot reach the bucket" in line


@pytest.mark.parametrize("storage, words", [("s3://", "name a bucket"),
                                            ("memory://x", "buckets are s3://, gs://, gcs://")])
def test_a_storage_uri_that_names_no_usable_bucket_is_refused(storage, words, capsys):
    assert words in _refused([*SWEEP, "--storage", storage], capsys)


def test_missing_credentials_are_refused(aws, monkeypatch, capsys, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    line = _refused([*SWEEP, "--storage", BUCKET], capsys)
    assert "no AWS credentials" in line


def test_a_bucket_that_does_not_exist_is_refused(aws, capsys):
    line = _refused([*SWEEP, "--storage", "s3://no-such-bucket/x"], capsys)
    assert "bucket 'no-such-bucket' does not exist" in line


def test_a_bucket_without_write_permission_is_refused(tmp_path, monkeypatch, capsys):
    """Its own server: permissions enforced (moto checks IAM policies once told to),
    a user that may read the bucket but not write to it."""
    import boto3
    server, env = start_s3_server(free_port(), bucket=None)
    try:
        make_bucket(env, "shared")
        iam = boto3.client("iam", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*", "s3:HeadBucket"],
                                                     "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        urllib.request.urlopen(urllib.request.Request(f"{env['AWS_ENDPOINT_URL']}/moto-api/reset-auth",
                                                      data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"})).close()
        for name, value in {**env, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}.items():
            monkeypatch.setenv(name, value)
        line = _refused([*SWEEP, "--storage", "s3://shared/team"], capsys)
        assert "--storage s3://shared/team: cannot write there" in line and "ACCESS_DENIED" in line.upper()
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


class _CutShort:
    """A filesystem whose move fails: the upload of the temporary object happened, the
    move over the real key did not (a driver killed between the two)."""
    def __init__(self, filesystem):
        self.fs = filesystem

    def open_output_stream(self, path):
        return self.fs.open_output_stream(path)

    def move(self, src, dst):
        raise OSError("killed")


def test_a_publish_cut_short_leaves_the_old_object_whole_and_readers_skip_the_temporary_one(aws, tmp_path):
    from analysis.bucket import download
    filesystem, root = open_fs(f"{BUCKET}/torn")
    put_bytes(filesystem, f"{root}/results/trials/a.parquet", b"old whole row")
    with pytest.raises(OSError):
        put_bytes(_CutShort(filesystem), f"{root}/results/trials/a.parquet", b"new row")
    keys = sorted(_objects(aws, f"{BUCKET}/torn"))
    assert len(keys) == 2 and keys[1] == "results/trials/a.parquet" and ".tmp-" in keys[0]
    assert get_bytes(filesystem, f"{root}/results/trials/a.parquet") == b"old whole row"
    assert download(f"{BUCKET}/torn", tmp_path, ("results",)) == 1
    assert (tmp_path / "results" / "trials" / "a.parquet").read_bytes() == b"old whole row"


def test_a_second_driver_cannot_claim_a_sweep_folder_in_a_bucket(aws):
    from study.claim import BucketLock, Claimed
    from study.storage import stage
    first, second = stage(BUCKET, "claimed"), stage(BUCKET, "claimed")
    lock = BucketLock(first).acquire()
    try:
        with pytest.raises(Claimed, match="in use by a running sweep"):
            BucketLock(second).acquire()
    finally:
        lock.release()
    BucketLock(second).acquire().release()          # released: the next driver gets it
    assert "sweep.lock" not in _objects(aws, f"{BUCKET}/claimed")
