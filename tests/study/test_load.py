"""Load: 200 tiny trials (one epoch on a small subset) through the whole sweep.
Minutes long, so outside CI: `bash scripts/test.sh -m slow -s` (prints the wall time)."""

import time

import pytest

from analysis.results import load_results
from study.sweep import main

from fixtures import mlflow_runs


@pytest.mark.slow
def test_200_tiny_trials_give_200_rows_and_200_runs(ray_cluster, tmp_path):
    argv = ["kpcl", "--smoke", "--num-samples", "200", "--epochs", "1", "--imbalance-levels", "1,10",
            "--set", "data.train_per_class=20", "--set", "data.test_per_class=10", "--set", "probe.epochs=5",
            "--storage", str(tmp_path), "--name", "load"]
    start = time.perf_counter()
    assert main(argv) == 0
    wall = time.perf_counter() - start
    df = load_results(tmp_path / "load")
    _, parents, children = mlflow_runs(tmp_path, "kpcl")
    print(f"\n200 trials: {wall:.0f} s wall, {wall / 200:.2f} s per trial; statuses "
          f"{df['status'].value_counts().to_dict()}")
    assert len(df) == 200 and df["trial_id"].is_unique and set(df["status"]) == {"ok"}
    assert len(parents) == 1 and len(children) == 200
    assert {c.data.tags["trial_id"] for c in children} == set(df["trial_id"])
