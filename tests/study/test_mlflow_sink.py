"""The MLflow sink on real stores, without Ray's scheduler: a sqlite store, and a real
`mlflow server` behind a TCP proxy that can go silent (fault injection, the only fake:
while "down" it accepts connections and never answers, as a hung server does)."""

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fixtures import free_port, mlflow_runs, start_mlflow_server

from analysis.results import load_history, load_results
from study.mlflow_sink import MlflowSink, reconcile
from study.mlflow_store import start_parent_run
from study.parquet_sink import ParquetSink
from study.records import config_columns
from trainables import names
from trainables.config import TrialConfig
from trainables.presets import SMOKE
from trainables.trial import run_trial


def test_more_metrics_than_one_mlflow_batch_takes_are_all_logged(tmp_path):
    # ImageNet-LT: 1000 classes per probe give 2000+ final metrics; MLflow takes 1000 a batch
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, parent = start_parent_run(uri, "big", "s", {}, tmp_path / "artifacts")
    sink = MlflowSink(uri, {"experiment_id": experiment_id, "parent_run_id": parent},
                      {"study": "big", "sweep": "s", "git_commit": "abc", "versions": {}})
    run_id = sink.client.create_run(experiment_id).info.run_id
    metrics = {f"lt/class_acc/{c:04d}": c / 2500 for c in range(2500)}
    sink._log(run_id, metrics, step=3, params={"loss.name": "kcl"}, tags={"status": "ok"})
    run = next(r for r in mlflow_runs(tmp_path, "big")[1] + mlflow_runs(tmp_path, "big")[2]
               if r.info.run_id == run_id)
    assert run.data.metrics == metrics
    assert run.data.params == {"loss.name": "kcl"} and run.data.tags["status"] == "ok"


class Proxy:
    """127.0.0.1:port -> the server. set(up=False): every open connection and every new one
    swallows what it gets and never answers; set(up=True): new connections forward again."""

    def __init__(self, target: int):
        self.target, self.up, self.generation = target, True, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, up: bool) -> None:
        self.up, self.generation = up, self.generation + 1

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target)) if self.up else None
            for src, dst in ((client, upstream), (upstream, client)) if upstream else ((client, None),):
                threading.Thread(target=self._pipe, args=(src, dst, self.generation), daemon=True).start()

    def _pipe(self, src, dst, generation):
        try:
            while data := src.recv(65536):
                if dst is not None and self.up and generation == self.generation:
                    dst.sendall(data)                    # else swallowed: no answer, ever
        except OSError:
            pass
        finally:
            if dst is not None and generation == self.generation:
                dst.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real tracking server on 127.0.0.1 for the module, and a proxy in front of it."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    proc = start_mlflow_server(folder, port)
    try:
        deadline = time.monotonic() + 120
        while socket.socket().connect_ex(("127.0.0.1", port)) and time.monotonic() < deadline:
            time.sleep(0.3)
        proxy = Proxy(port)
        yield SimpleNamespace(direct=f"http://127.0.0.1:{port}", uri=f"http://127.0.0.1:{proxy.port}", proxy=proxy)
        proxy.server.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture()
def quick_mlflow(monkeypatch, server):
    """MLflow's own waits short (the sweep sets 30 s and 2 retries), the proxy up after the test."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    yield
    server.proxy.set(up=True)


@pytest.fixture(scope="module")
def result():
    return run_trial(TrialConfig.from_flat({**SMOKE, "loss.name": "kcl", "seed": 3})).to_dict()


def _trial(trial_id: str, result: dict):
    """What the sinks read of a Tune trial that finished with `result`."""
    return SimpleNamespace(trial_id=trial_id, config=dict(result["config"]), error_file=None,
                           last_result={names.RESULT_PAYLOAD: json.dumps(result)})


def _sweep(server, tmp_path, sweep: str):
    """A parent run (the server up) and both sinks."""
    provenance = {"study": "outage", "sweep": sweep, "git_commit": "abc", "versions": {"torch": "x"}}
    experiment_id, parent = start_parent_run(server.uri, "outage", sweep, {}, tmp_path)
    state = {"experiment_id": experiment_id, "parent_run_id": parent}
    mlflow, parquet = MlflowSink(server.uri, state, provenance), ParquetSink(tmp_path / sweep / "results", provenance)
    return state, mlflow, parquet


def _drive(sinks, trial, result, failed: bool = False) -> float:
    """The trial's callbacks, as Tune calls them (start, one per epoch, the end); the slowest, in s."""
    slowest = 0.0
    calls = [("on_trial_start", {})] + [("on_trial_result", {"result": {**h, names.EPOCH: e}})
                                        for e, h in enumerate(result["history"], start=1)]
    calls.append(("on_trial_error", {}) if failed else ("on_trial_complete", {}))
    for sink in sinks:
        for name, kwargs in calls:
            start = time.monotonic()
            getattr(sink, name)(0, [], trial, **kwargs)
            slowest = max(slowest, time.monotonic() - start)
    return slowest


def _children(server, state) -> dict:
    from mlflow.tracking import MlflowClient
    runs = MlflowClient(server.direct).search_runs(
        [state["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'")
    return {r.data.tags["trial_id"]: r for r in runs}


def _assert_runs_match_rows(server, state, sweep_dir: Path, result: dict):
    """One ended run per row, with the row's params and metrics, and its history by epoch."""
    from mlflow.tracking import MlflowClient
    rows, runs = load_results(sweep_dir).set_index("trial_id"), _children(server, state)
    assert set(runs) == set(rows.index)
    params = {k: str(v) for k, v in config_columns(result["config"]).items() if v is not None}
    history = load_history(sweep_dir)
    for trial_id, run in runs.items():
        row = rows.loc[trial_id].to_dict()
        assert run.info.status == ("FAILED" if row["status"] == "error" else "FINISHED")
        assert run.data.params == params and run.data.tags["status"] == row["status"]
        final = {k: v for k, v in run.data.metrics.items() if k not in names.EPOCH_METRICS}
        assert final == names.row_metrics(row)
        if row["status"] == "ok":
            losses = MlflowClient(server.direct).get_metric_history(run.info.run_id, "loss")
            expected = history[history["trial_id"] == trial_id].set_index("epoch")["loss"].to_dict()
            assert {m.step: m.value for m in losses} == expected


def test_trials_never_wait_for_a_silent_server_and_their_runs_follow_when_it_is_back(
        server, quick_mlflow, tmp_path, result):
    state, mlflow, parquet = _sweep(server, tmp_path, "down-then-up")
    server.proxy.set(up=False)
    slowest = max(_drive([mlflow, parquet], _trial(t, result), result, failed=t == "t3")
                  for t in ("t1", "t2", "t3"))
    assert slowest < 0.5                                 # Tune's loop only queued the work
    time.sleep(3)                                        # attempts time out, are retried...
    assert mlflow._writer.pending > 0 and _children(server, state) == {}
    server.proxy.set(up=True)
    start = time.monotonic()
    assert reconcile(server.uri, state, tmp_path / "down-then-up", flush_s=60, timeout=60) == 0
    assert time.monotonic() - start < 30                 # the writer caught up: backoff stays short
    assert mlflow.finished == {"t1", "t2", "t3"}         # ... and it was the writer, not the rows
    _assert_runs_match_rows(server, state, tmp_path / "down-then-up", result)


def test_runs_missing_when_the_sweep_ends_are_counted_in_seconds_then_filled_in_from_the_rows(
        server, quick_mlflow, tmp_path, result):
    state, mlflow, parquet = _sweep(server, tmp_path, "down-at-end")
    server.proxy.set(up=False)
    for t in ("t1", "t2"):
        _drive([mlflow, parquet], _trial(t, result), result)
    start = time.monotonic()
    assert reconcile(server.uri, state, tmp_path / "down-at-end", flush_s=30, timeout=30) == 2
    assert time.monotonic() - start < 12                 # one failed retry ends the flush, then a 5 s probe
    server.proxy.set(up=True)
    assert reconcile(server.uri, state, tmp_path / "down-at-end", flush_s=1, timeout=60) == 0
    _assert_runs_match_rows(server, state, tmp_path / "down-at-end", result)
    # a second pass finds nothing to do, and no run is duplicated
    assert reconcile(server.uri, state, tmp_path / "down-at-end", flush_s=1, timeout=60) == 0
    assert len(_children(server, state)) == 2


def test_a_sweep_outlives_an_mlflow_outage_reports_the_gap_and_a_resume_fills_it(
        ray_cluster, server, quick_mlflow, tmp_path, capsys):
    # The real sweep, its tracking server silent from its first trial to its end.
    from study.sweep import main
    argv = ["kpcl", "--smoke", "--num-samples", "2", "--imbalance-levels", "10", "--storage", str(tmp_path),
            "--mlflow-uri", server.uri]
    journal = tmp_path / "out" / "journal.jsonl"

    def cut_when_trials_start():
        deadline = time.monotonic() + 300
        while not journal.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        server.proxy.set(up=False)
    threading.Thread(target=cut_when_trials_start, daemon=True).start()
    assert main([*argv, "--name", "out"]) == 0                # the trials never waited for MLflow
    assert len(load_results(tmp_path / "out")) == 2
    assert "run(s) missing in MLflow" in capsys.readouterr().out
    server.proxy.set(up=True)
    assert main(["kpcl", "--resume", "out", "--storage", str(tmp_path)]) == 0
    state = json.loads((tmp_path / "out" / "mlflow.json").read_text())
    runs = _children(server, state)
    rows = load_results(tmp_path / "out").set_index("trial_id")
    assert set(runs) == set(rows.index) and {r.info.status for r in runs.values()} == {"FINISHED"}
    for trial_id, run in runs.items():
        final = {k: v for k, v in run.data.metrics.items() if k not in names.EPOCH_METRICS}
        assert final == names.row_metrics(rows.loc[trial_id].to_dict())


def test_run_names_show_what_the_sweep_varies_loss_first_level_and_seed_last():
    from study.mlflow_store import run_name, varied_keys
    config = {"loss.name": "kcl", "loss.k": 6, "loss.temperature": 0.3, "data.imbalance_ratio": 10.0, "seed": 0,
              "optim.lr": 0.1, "data.dataset": "shapes"}
    assert run_name(config, varied_keys("kpcl")) == "kcl k=6 t=0.30 r=10 s=0"
    assert run_name({**config, "loss.name": "ce", "optim.weight_decay": 5e-4, "optim.lr": 0.0123},
                    varied_keys("ce")) == "ce lr=0.01 wd=5.0e-04 r=10 s=0"
    assert run_name({**config, "data.imbalance_ratio": 12.5, "seed": 3}, varied_keys("fig2")) == "kcl r=12.50 s=3"
