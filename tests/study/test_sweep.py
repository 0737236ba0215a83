"""Smoke sweeps on the real Ray, Optuna, MLflow (sqlite) and Parquet."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.confirmation import confirmed_table, split
from analysis.frontier import fronts_by
from analysis.results import load_history, load_results
from fixtures import mlflow_runs, sink_metrics
from study.studies import STUDIES, Study
from study.sweep import main
from trainables import names
from trainables.metrics import balancedness


def cell(value: float) -> str:
    """A number as the report's tables print it: whole numbers bare, others to 3 places."""
    return f"{value:g}" if float(value).is_integer() else f"{value:.3f}"


@pytest.fixture(scope="module")
def kpcl_smoke(smoke_sweep):
    """The session's smoke sweep (conftest.smoke_sweep): (exit status, storage)."""
    return smoke_sweep[:2]


def test_smoke_sweep_writes_one_row_and_one_child_run_per_trial(kpcl_smoke):
    code, storage = kpcl_smoke
    assert code == 0
    df = load_results(storage / "smoke")
    assert len(df) == 4 and df["trial_id"].is_unique and set(df["status"]) == {"ok"}
    assert (df["sweep"] == "smoke").all() and (df["study"] == "kpcl").all()
    _, parents, children = mlflow_runs(storage, "kpcl")
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.data.tags["trial_id"] for c in children} == set(df["trial_id"])
    assert parents[0].data.tags["git_commit"] and "study.sweep kpcl" in parents[0].data.tags["command"]
    # the report is written next to the results, quotes their numbers, and is attached to the parent run
    report = storage / "smoke" / "report"
    text = (report / "report.md").read_text()
    assert "Trials: 4 (4 ok)" in text and (report / "figure2.png").stat().st_size > 0
    for ratio, group in df.groupby("data.imbalance_ratio"):
        assert f"| kcl | {ratio:g} | 2 | {cell(group['lt/top1'].mean())} |" in text
    client, _, _ = mlflow_runs(storage, "kpcl")
    attached = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/report.md", "report/figure2.png", "report/tradeoff.png"} <= attached
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["git_commit"] == parents[0].data.tags["git_commit"]
        assert child.data.tags["version.torch"] and child.data.tags["version.ray"]
        for probe in ("lt", "balanced"):
            per_class = [k for k in child.data.metrics if k.startswith(f"{probe}/class_acc/")]
            assert sorted(per_class) == [f"{probe}/class_acc/{c:03d}" for c in range(10)]


def test_the_report_shows_every_trials_convergence_from_its_own_history(kpcl_smoke):
    from analysis.convergence import PLATEAUS, reference
    _, storage = kpcl_smoke
    text = (storage / "smoke" / "report" / "report.md").read_text()
    assert "## How far from converged" in text and "Every trial:" in text
    plateau = reference(PLATEAUS[("kcl", "shapes", "cnn")], 10.0).knn_acc   # levels 1 and 10: ratio 10's
    last = load_history(storage / "smoke").sort_values("epoch").groupby("trial_id").last()
    assert len(last) == 4
    for trial_id, epoch in last.iterrows():         # knn at the last epoch / KCL's plateau, per trial
        row = next(line for line in text.splitlines() if line.startswith(f"| {trial_id} |"))
        assert row.endswith(f"| {cell(epoch['knn_acc'] / plateau)} |")


def test_mlflow_runs_read_well_names_descriptions_and_dataset_inputs(kpcl_smoke):
    import json
    import re

    from study.studies import STUDIES
    _, storage = kpcl_smoke
    client, parents, children = mlflow_runs(storage, "kpcl")
    rows = load_results(storage / "smoke").set_index("trial_id")
    assert client.get_experiment_by_name("kpcl").tags["mlflow.note.content"] == STUDIES["kpcl"].question
    description = parents[0].data.tags["mlflow.note.content"]
    assert description.startswith(f"**kpcl**: {STUDIES['kpcl'].description}\n\n{STUDIES['kpcl'].question}")
    assert "| loss.name | data.imbalance_ratio | loss.k | loss.temperature | lt/top1 | lt/balancedness |" in description
    for child in children:
        row = rows.loc[child.data.tags["trial_id"]]
        # named by what differs between the trials, e.g. "kcl k=6 t=0.30 r=10 s=0"
        assert child.info.run_name == (f"kcl k={row['loss.k']} t={row['loss.temperature']:.2f} "
                                       f"r={row['data.imbalance_ratio']:g} s={row['seed']}")
        assert re.fullmatch(r"[0-9a-f]{16}", row["draw_digest"])
        (dataset,) = child.inputs.dataset_inputs
        assert dataset.dataset.digest == row["draw_digest"]
        assert dataset.dataset.name == f"shapes LT r={row['data.imbalance_ratio']:g}"
        tags = {t.key: t.value for t in dataset.tags}
        assert json.loads(tags["class_counts"]) == list(row["class_counts"]) and tags["mlflow.data.context"] == "train"
    # trials on the same draw (level and seed) share the digest; the levels' draws differ
    by_level = rows.groupby("data.imbalance_ratio")["draw_digest"].nunique()
    assert by_level.tolist() == [1, 1] and rows["draw_digest"].nunique() == 2


def assert_sinks_agree(storage: Path, sweep: str, study: str, expected: int) -> None:
    """Parquet, MLflow and Tune hold the same final metric names with the same values."""
    trials = sink_metrics(storage, sweep, study)
    assert len(trials) == expected
    for trial_id, (parquet, mlflow, tune) in trials.items():
        assert set(parquet) == set(mlflow) == set(tune), (trial_id, set(parquet) ^ set(mlflow) ^ set(tune))
        for name, value in parquet.items():
            assert mlflow[name] == pytest.approx(value) and tune[name] == pytest.approx(value), name


def test_the_three_sinks_hold_the_same_metric_names_and_values(kpcl_smoke):
    _, storage = kpcl_smoke
    assert_sinks_agree(storage, "smoke", "kpcl", expected=4)
    parquet = next(iter(sink_metrics(storage, "smoke", "kpcl").values()))[0]
    # what a kpcl trial has: 7 scalars and 10 class accuracies per probe, the pretraining summary, wall time
    assert {names.probe_metric("lt", "top1"), names.class_acc("balanced", 9), names.WALL_TIME,
            names.pretrain_column("final_loss")} <= set(parquet)
    assert sum(n.startswith("lt/") for n in parquet) == len(names.PROBE_METRICS) + 10


def test_every_imbalance_level_gets_its_share_and_k_is_searched(kpcl_smoke):
    _, storage = kpcl_smoke
    df = load_results(storage / "smoke")
    assert df["data.imbalance_ratio"].value_counts().to_dict() == {1.0: 2, 10.0: 2}
    assert (df["loss.name"] == "kcl").all() and df["loss.k"].between(1, 32).all()
    assert df["loss.temperature"].between(0.05, 0.5).all()
    assert df["loss.queue_size"].isna().all()          # batch mode: the queue's knobs are null


def test_stored_balancedness_equals_the_one_recomputed_from_per_class_accuracy(kpcl_smoke):
    _, storage = kpcl_smoke
    df = load_results(storage / "smoke")
    for _, row in df.iterrows():
        for probe in ("lt", "balanced"):
            acc = list(row[f"{probe}/per_class_acc"])
            assert len(acc) == 10
            assert math.isclose(row[f"{probe}/balancedness"], balancedness(acc, row["eval.sigma"]))
            assert math.isclose(row[f"{probe}/top1"], sum(acc) / 10)
        assert sum(row["class_counts"]) > 0 and len(row["class_counts"]) == 10


def test_mlflow_final_metrics_match_the_parquet_row(kpcl_smoke):
    _, storage = kpcl_smoke
    df = load_results(storage / "smoke").set_index("trial_id")
    _, _, children = mlflow_runs(storage, "kpcl")
    for child in children:
        row = df.loc[child.data.tags["trial_id"]]
        assert math.isclose(child.data.metrics["lt/top1"], row["lt/top1"])
        assert child.data.params["loss.k"] == str(row["loss.k"])
        assert child.data.metrics["knn_acc"] == pytest.approx(load_history(storage / "smoke").query(
            "trial_id == @child.data.tags['trial_id']")["knn_acc"].iloc[-1])



def test_a_grid_value_the_config_refuses_is_bad_input_before_anything_runs(tmp_path, monkeypatch, capsys):
    # every grid point is checked on the driver (a trial that raises on the worker is an
    # error row: tests/study/test_faults.py)
    monkeypatch.setitem(STUDIES, "faulty", Study("test only", grid={"loss.temperature": [0.3, -1.0]},
                                                 base={"loss.name": "simclr"}))
    with pytest.raises(SystemExit) as exit_:
        main(["faulty", "--smoke", "--imbalance-levels", "10", "--storage", str(tmp_path), "--name", "f"])
    assert exit_.value.code == 2 and "loss.temperature=-1.0 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_resume_after_an_interrupted_sweep_completes_it_without_duplicates(ray_cluster, tmp_path):
    # The first run is a separate process with its own local Ray, interrupted (SIGINT,
    # as Ctrl-C) once its first trial has been written; the resume runs here.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    # with --confirm 2: after the search, its Pareto-optimal trials run again on two new seeds
    argv = ["kpcl", "--smoke", "--num-samples", "6", "--max-concurrent", "1", "--confirm", "2",
            "--storage", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "study.sweep", *argv, "--name", "r"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = tmp_path / "r" / "results" / "trials"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(trials.glob("*.parquet")):
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 130                       # interrupted, and says how to resume
    before = load_results(tmp_path / "r")
    assert 1 <= len(before) < 6
    assert main(["kpcl", "--resume", "r", "--storage", str(tmp_path)]) == 0
    everything = load_results(tmp_path / "r")
    after, confirmations = split(everything)
    assert len(after) == 6 and everything["trial_id"].is_unique
    # finished trials were not rerun: their rows are the very same
    kept = after.set_index("trial_id").loc[before["trial_id"], "wall_time_s"]
    assert kept.tolist() == before["wall_time_s"].tolist()
    _check_confirmations(tmp_path, after, confirmations)
    epochs = load_history(tmp_path / "r").groupby("trial_id")["epoch"].apply(list)
    assert len(epochs) == len(everything) and all(e == [1, 2] for e in epochs)   # smoke: 2 epochs, none twice
    _, parents, children = mlflow_runs(tmp_path, "kpcl")
    assert len(parents) == 1 and len(children) == len(everything)
    assert {c.data.tags["trial_id"] for c in children} == set(everything["trial_id"])
    assert {c.data.tags["trial_id"]: c.data.tags.get("confirm_of") for c in children if "confirm_of" in c.data.tags} \
        == dict(zip(confirmations["trial_id"], confirmations["confirm_of"]))
    # the resumed search continued the same Optuna studies: one Optuna trial per journal entry
    import optuna

    from study.journal import FILE, read
    entries = [e for e in read(tmp_path / "r" / FILE) if not e.confirm_of]     # confirmations: no Optuna trial
    assert sorted((e.slot, e.optuna_trial) for e in entries) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    for slot, level in enumerate(("1", "10")):
        study = optuna.load_study(study_name=f"r:ratio={level}", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
        assert {t.number: t.params for t in study.trials} == {
            e.optuna_trial: e.params for e in entries if e.slot == slot}


def _check_confirmations(storage: Path, search, confirmations) -> None:
    """Every level's Pareto-optimal search trials, each on seeds 1 and 2 (the search ran on
    seed 0), with the member's knobs; the report's section and its numbers."""
    objectives = [names.probe_metric(names.LT, m) for m in (names.TOP1, names.BALANCEDNESS)]
    front = search[fronts_by(search, objectives, ["data.imbalance_ratio"])]
    assert sorted(confirmations["confirm_of"]) == sorted(list(front["trial_id"]) * 2)
    for _, c in confirmations.iterrows():
        member = search.set_index("trial_id").loc[c["confirm_of"]]
        assert (c["loss.k"], c["loss.temperature"], c["data.imbalance_ratio"]) == (
            member["loss.k"], member["loss.temperature"], member["data.imbalance_ratio"])
    assert sorted(confirmations.groupby("confirm_of")["seed"].apply(sorted).tolist()) == [[1, 2]] * len(front)
    report = (storage / "r" / "report" / "report.md").read_text()
    assert "## Confirmed frontier" in report and "### Winner's curse" in report
    table = confirmed_table(pd.concat([search, confirmations]), objectives).set_index("trial_id")
    for trial_id, group in confirmations.groupby("confirm_of"):
        assert table.loc[trial_id, f"{objectives[0]} confirmed"] == pytest.approx(group[objectives[0]].mean())


def test_fig2_grid_runs_every_loss_at_every_level_and_k_only_for_kcl(ray_cluster, tmp_path):
    assert main(["fig2", "--smoke", "--storage", str(tmp_path), "--name", "g"]) == 0
    df = load_results(tmp_path / "g")
    combos = sorted(zip(df["loss.name"], df["data.imbalance_ratio"]))
    assert combos == sorted((loss, level) for loss in ("ce", "simclr", "kcl", "pkcl") for level in (1.0, 10.0))
    with_k = df["loss.name"].isin(["kcl", "pkcl"])
    assert df.loc[with_k, "loss.k"].notna().all() and df.loc[~with_k, "loss.k"].isna().all()
    assert (df.loc[df["loss.name"] == "pkcl", "loss.clusters"] == 20).all()      # the smoke preset's M
    assert df.loc[df["loss.name"] != "pkcl", "loss.clusters"].isna().all()
    assert df.loc[df["loss.name"] == "ce", "loss.temperature"].isna().all()
    _, _, children = mlflow_runs(tmp_path, "fig2")
    has_k = {c.data.params["loss.name"]: "loss.k" in c.data.params for c in children}
    assert has_k == {"ce": False, "simclr": False, "kcl": True, "pkcl": True}


def test_single_objective_asha_over_an_imbalance_range(ray_cluster, tmp_path):
    argv = ["cl", "--smoke", "--objective", "top1", "--scheduler", "asha", "--epochs", "4",
            "--imbalance-range", "1:20", "--storage", str(tmp_path), "--name", "a"]
    assert main(argv) == 0
    df = load_results(tmp_path / "a")
    assert len(df) == 4 and set(df["status"]) <= {"ok", "stopped"} and (df["status"] == "ok").any()
    assert df["data.imbalance_ratio"].between(1, 20).all() and df["data.imbalance_ratio"].nunique() == 4
    history = load_history(tmp_path / "a")
    epochs = history.groupby("trial_id")["epoch"].max()
    finished = df.loc[df["status"] == "ok", "trial_id"]
    assert (epochs[finished] == 4).all()
    assert (epochs[df.loc[df["status"] == "stopped", "trial_id"]] < 4).all()


def test_moasha_stops_trials_at_the_rung_with_their_probes_and_mlflow_agrees(ray_cluster, tmp_path):
    # Smoke: 2 epochs, one rung at epoch 1 keeping the top third by non-dominated sorting
    # of (knn_acc, knn_balancedness); one trial at a time, so each is judged on all before it.
    argv = ["kpcl", "--smoke", "--scheduler", "moasha", "--imbalance-levels", "10", "--num-samples", "5",
            "--max-concurrent", "1", "--storage", str(tmp_path), "--name", "m"]
    assert main(argv) == 0
    df = load_results(tmp_path / "m").set_index("trial_id")
    assert len(df) == 5 and set(df["status"]) == {"ok", "stopped"}, df["status"]
    epochs = df["pretrain/epochs_completed"]
    assert (epochs[df["status"] == "ok"] == 2).all() and (epochs[df["status"] == "stopped"] == 1).all()
    # a stopped trial still has its test metrics, from its probes at the rung
    assert df["lt/top1"].between(0, 1).all() and df["balanced/balancedness"].between(0, 1).all()
    assert (df["lt/per_class_acc"].map(len) == 10).all()
    history = load_history(tmp_path / "m")
    assert history.groupby("trial_id")["epoch"].max().to_dict() == epochs.to_dict()
    for _, row in history.iterrows():              # each epoch's p(V) is that of its class accuracies
        assert row["knn_balancedness"] == pytest.approx(balancedness(row["knn_per_class_acc"], 0.1))
    _, parents, children = mlflow_runs(tmp_path, "kpcl")
    assert {c.info.status for c in children} == {"FINISHED"} and len(children) == 5
    for run in children:
        row = df.loc[run.data.tags["trial_id"]]
        assert run.data.tags["status"] == row["status"]
        assert run.data.metrics["lt/top1"] == pytest.approx(row["lt/top1"])
    # replayed from the history in start order, the rungs stop exactly the trials that
    # were stopped (what a --resume rebuilds its rungs from)
    from study.moasha import MOASHA
    replayed = MOASHA(epochs=2, grace=1, eta=3).replay_history(tmp_path / "m")
    assert replayed == {t: status == "ok" for t, status in df["status"].items()}
    # the journal knows which were stopped (told to Optuna as pruned), and a resume
    # runs nothing: stopped trials are not revived
    from study.journal import resume_state
    stopped = resume_state(tmp_path / "m", ["lt/top1", "lt/balancedness"]).stopped
    assert len(stopped) == (df["status"] == "stopped").sum()
    assert main(["kpcl", "--resume", "m", "--storage", str(tmp_path)]) == 0
    assert len(load_results(tmp_path / "m")) == 5


@pytest.mark.parametrize("dataset", ["cifar10", "imagelist"])
def test_smoke_sweep_on_test_made_real_format_data(ray_cluster, tmp_path, dataset, cifar_root, list_root):
    root = {"cifar10": cifar_root, "imagelist": list_root}[dataset]
    extra = ["--set", "data.image_size=16", "--set", "optim.batch_size=8"] if dataset == "imagelist" else []
    argv = ["kpcl", "--smoke", "--dataset", dataset, "--data-root", str(root), "--imbalance-levels", "10",
            "--num-samples", "2", "--storage", str(tmp_path), "--name", dataset, *extra]
    assert main(argv) == 0
    df = load_results(tmp_path / dataset)
    assert len(df) == 2 and set(df["status"]) == {"ok"} and (df["data.dataset"] == dataset).all()
    report = (tmp_path / dataset / "report" / "report.md").read_text()
    # a list takes its imbalance from its own profile: the report's level is then max / min count
    counts = list(df["class_counts"].iloc[0])
    level = 10 if dataset == "cifar10" else max(counts) / min(counts)
    assert "Trials: 2 (2 ok)" in report and f"| kcl | {level:g} | 2 | {cell(df['lt/top1'].mean())} |" in report


def test_actor_reuse_does_not_change_the_numbers(ray_cluster, tmp_path):
    metrics = []
    for flag in ([], ["--no-reuse-actors"]):
        name = "fresh" if flag else "reused"
        argv = ["kpcl", "--smoke", "--num-samples", "3", "--imbalance-levels", "10", "--max-concurrent", "1",
                "--storage", str(tmp_path), "--name", name, *flag]
        assert main(argv) == 0
        df = load_results(tmp_path / name).sort_values(["loss.k", "loss.temperature"])
        metrics.append(df[["loss.k", "loss.temperature", "lt/top1", "balanced/balancedness",
                           "pretrain/final_loss"]].to_numpy().tolist())
    assert metrics[0] == metrics[1]


def test_runs_of_trials_without_a_row_are_dropped_after_a_resume(tmp_path):
    # A killed driver may have opened a run for a trial it never saved; the resumed
    # sweep replaces that trial, and its run must not outnumber the rows.
    from mlflow.tracking import MlflowClient

    from study.mlflow_store import drop_orphan_runs, start_parent_run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, parent = start_parent_run(uri, "kpcl", "s", {}, tmp_path / "artifacts")
    client = MlflowClient(uri)
    _, other = start_parent_run(uri, "kpcl", "s", {}, tmp_path / "artifacts")   # same name, another storage
    for trial_id, under in (("a", parent), ("b", parent), ("lost", parent), ("c", other)):
        client.create_run(experiment_id, tags={"mlflow.parentRunId": under, "trial_id": trial_id, "sweep": "s"})
    assert drop_orphan_runs(uri, experiment_id, parent, {"a", "b"}) == ["lost"]
    active = {r.data.tags.get("trial_id") for r in client.search_runs([experiment_id])}
    assert active == {"a", "b", "c", None}                     # None: the parent runs


def test_select_smoke_sweep_writes_selection_rows_runs_and_the_report(ray_cluster, tmp_path, capsys):
    from analysis.selection import load_selection
    from trainables.selection import STRATEGIES
    assert main(["select", "--smoke", "--storage", str(tmp_path), "--name", "sel"]) == 0
    summary = capsys.readouterr().out            # the frontier of the study's own objectives
    assert "Pareto-optimal trials" in summary and names.select_objective("probcover", "top1") in summary
    trials = load_results(tmp_path / "sel")
    # 5 encoders (simclr, pkcl at M = 10 and 50, kcl, ce) x 2 imbalance levels, one round;
    # Optuna set the strategies' knobs
    assert len(trials) == 10 and set(trials["status"]) == {"ok"}
    encoders = trials.groupby(["loss.name", "loss.clusters", "data.imbalance_ratio"], dropna=False).size()
    assert sorted(encoders) == [1] * 10
    assert sorted(trials["loss.clusters"].dropna()) == [10, 10, 50, 50]
    assert trials["select.delta"].between(0.2, 1.2).all() and trials["select.multiplier"].between(1, 8).all()
    rows = load_selection(tmp_path / "sel")
    assert len(rows) == 10 * len(STRATEGIES) * 4                   # every strategy at every budget
    assert set(rows["budget"]) == {10, 20, 40, 100}
    assert (rows["classes_covered"] <= rows["budget"]).all() and rows["entropy"].between(0, 1).all()
    # random ignores the features: the same pool and seed give the same selection for every encoder
    random = rows[rows["strategy"] == "random"].groupby(["data.imbalance_ratio", "budget"])["classes_covered"]
    assert (random.nunique() == 1).all()
    _, _, children = mlflow_runs(tmp_path, "select")
    run = next(c for c in children if c.data.tags["trial_id"] == rows["trial_id"].iloc[0])
    first = rows[rows["trial_id"] == rows["trial_id"].iloc[0]].set_index(["strategy", "budget"])
    assert run.data.metrics["select/spread/20/entropy"] == pytest.approx(first.loc[("spread", 20), "entropy"])
    assert_sinks_agree(tmp_path, "sel", "select", expected=10)
    # the study's objectives are Parquet columns: the mean over budgets of each strategy's top-1
    objective = names.select_objective("spread", "top1")
    means = rows[rows["strategy"] == "spread"].groupby("trial_id")["top1"].mean()
    assert trials.set_index("trial_id")[objective].to_dict() == pytest.approx(means.to_dict())
    report = (tmp_path / "sel" / "report" / "report.md").read_text()
    assert "### Q1" in report and "### Q2" in report and "### Q3" in report
    # the second question: pkcl at each M against SimCLR; one seed per level, so no claims
    assert "pkcl M=10 minus SimCLR: the feature space" in report and "pkcl M=50 minus SimCLR" in report
    assert "no difference detected at n = 1" in report and "fraction of KCL's lead closed" in report
    assert "| CV |" in report                         # from the balanced probe's per-class accuracies
    # the main report's loss comparisons keep the two pkcl encoders apart (one per loss and seed)
    assert "## Loss comparisons, paired by seed" in report and "pkcl M=50" in report
    assert (tmp_path / "sel" / "report" / "selection_entropy.png").exists()
