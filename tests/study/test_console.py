"""What a user sees: the console of a default smoke sweep (the session's, run as a user runs
it), and --quiet."""

import re

from study.sweep import main

PROGRESS = re.compile(r"\[\d:\d\d:\d\d\] done \d  running \d  failed 0  of 4  best lt/top1 \d\.\d{3}  "
                      r"best lt/balancedness \d\.\d{3}  eta (\d:\d\d:\d\d|\?)")
WHERE = [re.compile(r"compare runs:      mlflow ui --backend-store-uri sqlite:///\S+/mlflow\.db "
                    r"--host 127\.0\.0\.1 --port 5000"),
         re.compile(r' {19}then "Model training" \(top left\) > experiment kpcl > run smoke'),
         re.compile(r"Optuna studies:    optuna-dashboard sqlite:///\S+/optuna\.db --host 127\.0\.0\.1 --port 8080")]


def test_the_progress_goes_to_stderr_with_nothing_from_ray_mlflow_or_warnings(smoke_sweep):
    code, storage, out, err = smoke_sweep
    assert code == 0, err
    lines = err.splitlines()
    # no Ray banner or TensorBoard hint, no token warning, no MLflow/Alembic notes, no warnings:
    # the start line, where to look, then one progress line per trial and nothing else
    assert lines[0] == f"sweep smoke: 4 of 4 trials of kpcl -> {storage / 'smoke'}"
    assert all(p.fullmatch(line) for p, line in zip(WHERE, lines[1:4])), lines[1:4]
    assert len(lines) == 8 and all(PROGRESS.fullmatch(line) for line in lines[4:]), lines[4:]
    assert [int(line.split("done ")[1].split()[0]) for line in lines[4:]] == [1, 2, 3, 4]


def test_the_summary_goes_to_stdout_and_names_both_stores(smoke_sweep):
    code, storage, out, err = smoke_sweep
    assert out.startswith("\n4 trials: 4 ok\n\nPareto-optimal trials per imbalance level (lt/top1 and "
                          "lt/balancedness):\n")
    assert not PROGRESS.search(out) and "Token" not in out and "TensorBoard" not in out
    assert f"results (Parquet): {storage / 'smoke'}/results" in out
    assert all(p.search(out) for p in WHERE)
    assert out.rstrip().splitlines()[-1] == (f"report:            {storage / 'smoke' / 'report' / 'report.md'}"
                                             " (attached to the sweep's MLflow run)")


def test_quiet_prints_the_summary_only(ray_cluster, tmp_path, capsys):
    argv = ["kpcl", "--smoke", "--quiet", "--num-samples", "1", "--imbalance-levels", "1", "--storage", str(tmp_path)]
    assert main([*argv, "--name", "q"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("\n1 trials: 1 ok\n") and "optuna-dashboard" in out
