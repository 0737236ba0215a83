"""The MLflow sink on a real sqlite store, without Ray's scheduler."""

from fixtures import mlflow_runs


def test_more_metrics_than_one_mlflow_batch_takes_are_all_logged(tmp_path):
    # ImageNet-LT: 1000 classes per probe give 2000+ final metrics; MLflow takes 1000 a batch
    from study.mlflow_sink import MlflowSink, start_parent_run
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
