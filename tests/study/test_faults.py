"""Real faults during real sweeps: a killed worker, an out-of-memory trial, a trial
that raises, a killed driver. Faults are injected by trainables.faults (armed by
the `faults` fixture); everything else is the real Ray, Optuna, MLflow and Parquet."""

import os
import signal
import subprocess
import sys
import time

from fixtures import mlflow_runs

from analysis.results import load_history, load_results
from study.studies import STUDIES, Study
from study.sweep import main

FINAL = ["lt/top1", "lt/balancedness", "balanced/top1", "balanced/balancedness", "pretrain/final_loss"]


def _grid(monkeypatch, name: str, grid: dict) -> None:
    monkeypatch.setitem(STUDIES, name, Study("test only", grid=grid, base={"loss.name": "kcl"}))


def test_a_killed_worker_resumes_from_its_checkpoint_with_the_same_numbers(ray_cluster, tmp_path,
                                                                          monkeypatch, faults):
    # Two trials that differ only in the kNN monitor's k (which touches neither training
    # nor the probes): the one with knn_k = 21 has its worker SIGKILLed after epoch 2 of 4.
    _grid(monkeypatch, "twins", {"eval.knn_k": [20, 21]})
    faults([{"when": {"eval.knn_k": 21}, "epoch": 2, "fault": "kill", "once": True}])
    argv = ["twins", "--smoke", "--epochs", "4", "--imbalance-levels", "10", "--max-concurrent", "1",
            "--storage", str(tmp_path), "--name", "k"]
    assert main(argv) == 0
    df = load_results(tmp_path / "k").set_index("eval.knn_k")
    assert list(df["status"]) == ["ok", "ok"] and len(df) == 2
    assert df.loc[20, "pretrain/resumed_from_epoch"] == 0
    assert df.loc[21, "pretrain/resumed_from_epoch"] in (1, 2)   # 2 unless the kill beat the report
    assert df.loc[21, FINAL].tolist() == df.loc[20, FINAL].tolist()
    assert df.loc[21, "lt/per_class_acc"].tolist() == df.loc[20, "lt/per_class_acc"].tolist()
    history = load_history(tmp_path / "k").groupby("trial_id")["epoch"].apply(list)
    assert history[df.loc[21, "trial_id"]] == [1, 2, 3, 4]      # no epoch twice
    _, _, children = mlflow_runs(tmp_path, "twins")
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}


def test_oom_and_raising_trials_are_error_rows_and_the_rest_finish(ray_cluster, tmp_path, monkeypatch, faults):
    _grid(monkeypatch, "faulty", {"eval.knn_k": [20, 21, 22]})
    faults([{"when": {"eval.knn_k": 21}, "epoch": 1, "fault": "oom"},
            {"when": {"eval.knn_k": 22}, "epoch": 1, "fault": "raise"}])
    argv = ["faulty", "--smoke", "--imbalance-levels", "10", "--storage", str(tmp_path), "--name", "f"]
    assert main(argv) == 0                                   # one trial succeeded
    df = load_results(tmp_path / "f").set_index("eval.knn_k")
    assert df["status"].to_dict() == {20: "ok", 21: "error", 22: "error"}
    assert "can't allocate memory" in df.loc[21, "error"]
    assert "injected fault" in df.loc[22, "error"]
    _, _, children = mlflow_runs(tmp_path, "faulty")
    status = {c.data.tags["trial_id"]: c.info.status for c in children}
    assert {k: status[df.loc[k, "trial_id"]] for k in (20, 21, 22)} == {20: "FINISHED", 21: "FAILED",
                                                                        22: "FAILED"}


def test_a_sweep_in_which_every_trial_fails_exits_1(ray_cluster, tmp_path, monkeypatch, faults):
    _grid(monkeypatch, "doomed", {"eval.knn_k": [20, 21]})
    faults([{"when": {}, "epoch": 1, "fault": "raise"}])
    argv = ["doomed", "--smoke", "--imbalance-levels", "10", "--max-failures", "0",
            "--storage", str(tmp_path), "--name", "d"]
    assert main(argv) == 1
    assert set(load_results(tmp_path / "d")["status"]) == {"error"}


def test_a_killed_driver_resumes_without_losing_or_repeating_a_trial(ray_cluster, tmp_path):
    # The driver is a separate process with its own local Ray; SIGKILL to its whole
    # process group once two trials are written: no handler runs, nothing is flushed.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("STUDY_FAULTS")
    argv = ["kpcl", "--smoke", "--num-samples", "6", "--max-concurrent", "1", "--imbalance-levels", "10",
            "--storage", str(tmp_path), "--name", "r"]
    proc = subprocess.Popen([sys.executable, "-m", "study.sweep", *argv], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = tmp_path / "r" / "results" / "trials"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(trials.glob("[!.]*.parquet"))) < 2:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(2)                                           # its Ray processes follow it down
    before = load_results(tmp_path / "r")
    assert 2 <= len(before) < 6
    assert main(["kpcl", "--resume", "r", "--storage", str(tmp_path)]) == 0
    after = load_results(tmp_path / "r")
    assert len(after) == 6 and after["trial_id"].is_unique and set(after["status"]) == {"ok"}
    # every row written before the kill is kept as it was: the journal knew each trial
    kept = after.set_index("trial_id").loc[before["trial_id"], "lt/top1"]
    assert kept.tolist() == before["lt/top1"].tolist()
    _, parents, children = mlflow_runs(tmp_path, "kpcl")
    assert len(parents) == 1 and {c.data.tags["trial_id"] for c in children} == set(after["trial_id"])
    assert len(children) == 6
    # the search continued: rebuilt from the journal and the rows, it has told Optuna
    # every finished trial once and asked for no seventh
    from study.journal import resume_state
    from study.searcher import LevelSearch
    from study.studies import STUDIES
    objectives = ["lt/top1", "lt/balancedness"]
    search = LevelSearch(STUDIES["kpcl"].space, objectives, [10.0], 0)
    search.resume(resume_state(tmp_path / "r", objectives))
    told = [t for t in search.study(0).trials if t.state.is_finished()]
    assert search.started == 6 and len(told) == 6 and not search.pending
