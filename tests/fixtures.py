"""Plain helpers shared by the tests (pytest fixtures are in conftest.py)."""

from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_runs(storage: Path, study: str):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def sink_metrics(storage: Path, sweep: str, study: str) -> dict[str, tuple[dict, dict, dict]]:
    """Per trial id: its final metrics as each sink holds them, (Parquet, MLflow, Tune).

    Parquet: the trial's row (and selection rows) read back by names.row_metrics;
    MLflow: the child run's metrics less the per-epoch ones; Tune: the trial's last
    report, read through Tune's public ExperimentAnalysis, less Tune's own keys and
    the payload for the driver's sinks."""
    import pandas as pd
    from ray.tune import ExperimentAnalysis
    from ray.tune.result import AUTO_RESULT_KEYS, DEFAULT_EXPERIMENT_INFO_KEYS

    from analysis.results import load_results
    from trainables import names
    rows = load_results(storage / sweep).set_index("trial_id", drop=False)
    sel_dir = storage / sweep / "results" / "selection"
    selection = pd.concat([pd.read_parquet(f) for f in sel_dir.glob("*.parquet")]) if sel_dir.exists() else None
    per_epoch = {names.EPOCH, *names.EPOCH_METRICS, *names.EPOCH_LISTS}
    tune_own = {*AUTO_RESULT_KEYS, *DEFAULT_EXPERIMENT_INFO_KEYS, "done", names.STATUS, names.RESULT_PAYLOAD}
    reports = ExperimentAnalysis(str(storage / sweep)).results
    out = {}
    for child in mlflow_runs(storage, study)[2]:
        trial_id = child.data.tags["trial_id"]
        sel = [] if selection is None else selection[selection["trial_id"] == trial_id].to_dict("records")
        parquet = names.row_metrics(rows.loc[trial_id].to_dict(), sel)
        mlflow = {k: v for k, v in child.data.metrics.items() if k not in per_epoch}
        tune = {k: v for k, v in reports[trial_id].items() if k not in per_epoch | tune_own}
        out[trial_id] = (parquet, mlflow, tune)
    return out


def unit_rows(m, d, gen, dtype=None):
    """[m, d] random rows of unit length (float64 unless dtype says otherwise)."""
    import torch
    return torch.nn.functional.normalize(torch.randn(m, d, generator=gen, dtype=dtype or torch.float64), dim=1)


def two_view_labels(y):
    """Labels of a two-view batch ordered [view 1 of 0..n-1, view 2 of 0..n-1]."""
    import torch
    y = torch.as_tensor(y)
    return torch.cat([y, y])


COUNTS = {0: 12, 1: 6, 2: 3}          # a long-tailed train list
COLOURS = {0: (220, 30, 30), 1: (30, 220, 30), 2: (30, 30, 220)}


def write_image(path, label, i):
    from PIL import Image
    img = Image.new("RGB", (40 + i % 7, 30 + i % 5), COLOURS[label])   # sizes vary: resize is exercised
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)




def start_mlflow_server(folder: Path, port: int):
    """A real `mlflow server` on 127.0.0.1:port with its own sqlite store and artifact
    folder under `folder`, in its own process group (stop it with os.killpg)."""
    import subprocess
    import sys
    mlflow = Path(sys.executable).parent / "mlflow"
    return subprocess.Popen([str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                             "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_s3_server(port: int, bucket: str | None = "sweeps") -> tuple:
    """moto's S3 server (a real S3 API over HTTP) on 127.0.0.1:port, with `bucket` created;
    returns the process and the standard AWS variables that point a client at it."""
    import subprocess
    import sys
    import time
    import urllib.request
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"moto's S3 server did not start on 127.0.0.1:{port}")
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    if bucket:
        make_bucket(env, bucket)
    return server, env


def make_bucket(env: dict, bucket: str) -> None:
    import boto3                                  # moto's dependency: the test extra only
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                 region_name=env["AWS_DEFAULT_REGION"]).create_bucket(Bucket=bucket)


def wait_for_port(port: int, seconds: float) -> None:
    """Until something accepts connections on 127.0.0.1:port (TimeoutError after `seconds`)."""
    import socket
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")
