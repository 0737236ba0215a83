"""A shared storage folder, as a careless or hostile colleague leaves it: files that
would run code if unpickled, a copied sweep, two drivers in one folder, a stale lock."""

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from fixtures import mlflow_runs

from analysis.results import load_results
from study.claim import FILE as LOCK, Claimed, SweepLock
from study.sweep import main

SWEEP = ["kpcl", "--smoke", "--num-samples", "2", "--imbalance-levels", "10", "--max-concurrent", "1"]


@pytest.fixture(scope="module")
def finished(ray_cluster, tmp_path_factory):
    """A finished two-trial sweep `t` in its own storage folder: each test works on a copy."""
    storage = tmp_path_factory.mktemp("s0")
    assert main([*SWEEP, "--storage", str(storage), "--name", "t"]) == 0
    return storage


def _copy_without_a_row(finished, tmp_path):
    """`cp -a` of the storage folder, then one trial's row removed: the copy's resume
    must continue that trial (from its epoch-1 checkpoint) and nothing else.
    Returns (copy, the removed trial's id, its row as it was)."""
    copy = tmp_path / "s1"
    shutil.copytree(finished, copy, symlinks=True)
    rows = load_results(copy / "t").sort_values("trial_id")
    lost = rows.iloc[0]
    for kind in ("trials", "history"):
        (copy / "t" / "results" / kind / f"{lost['trial_id']}.parquet").unlink()
    return copy, lost["trial_id"], lost


class _Shell:
    """Unpickles to a call of os.system: what any pickle in the folder could hold."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tamper(sweep, markers):
    """Put a code-running payload in each file Ray's restore would unpickle, and show
    that each one does run code when read the way Ray reads it."""
    from ray.tune.utils.serialization import TuneFunctionDecoder
    (sweep / "searcher-state-2026.pkl").write_bytes(pickle.dumps(_Shell(markers[0])))
    (sweep / "tuner.pkl").write_bytes(pickle.dumps({"_tuner": _Shell(markers[1])}))
    for state in sweep.glob("experiment_state-*.json"):
        saved = json.loads(state.read_text())
        saved["runner_data"] = {"_type": "CLOUDPICKLE_FALLBACK",
                                "value": pickle.dumps(_Shell(markers[2])).hex()}
        state.write_text(json.dumps(saved))
    pickle.loads((sweep / "searcher-state-2026.pkl").read_bytes())
    pickle.loads((sweep / "tuner.pkl").read_bytes())
    for state in sweep.glob("experiment_state-*.json"):
        TuneFunctionDecoder(allow_cloudpickle=True).decode(state.read_text())
    assert all(m.exists() for m in markers), "the payloads must be live for the test to mean anything"
    for m in markers:
        m.unlink()


def test_resume_runs_nothing_from_the_storage_folder(finished, tmp_path):
    copy, lost_id, lost = _copy_without_a_row(finished, tmp_path)
    markers = [tmp_path / f"ran-{i}" for i in range(3)]
    _tamper(copy / "t", markers)
    assert main(["kpcl", "--resume", "t", "--storage", str(copy)]) == 0
    assert not any(m.exists() for m in markers)
    after = load_results(copy / "t")
    assert len(after) == 2 and set(after["status"]) == {"ok"} and lost_id not in set(after["trial_id"])
    # the removed trial ran again under a new id, continued from its epoch-1 checkpoint,
    # and (same seed, on the CPU) reached the very same numbers
    again = after[~after["trial_id"].isin(load_results(finished / "t")["trial_id"])].iloc[0]
    assert again["pretrain/resumed_from_epoch"] == 1
    for column in ("lt/top1", "lt/balancedness", "balanced/top1", "pretrain/final_loss"):
        assert again[column] == lost[column], column
    # the journal says which trial it continued; Optuna was told each trial once
    lines = [json.loads(x) for x in (copy / "t" / "journal.jsonl").read_text().splitlines()]
    assert sorted(x["n"] for x in lines) == [0, 0, 1] or sorted(x["n"] for x in lines) == [0, 1, 1]
    _, parents, children = mlflow_runs(copy, "kpcl")
    assert len(parents) == 1 and {c.data.tags["trial_id"] for c in children} == set(after["trial_id"])


def _tree(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_a_copied_sweep_resumes_where_it_now_is_and_leaves_the_original_untouched(finished, tmp_path):
    before = _tree(finished)
    copy, _, _ = _copy_without_a_row(finished, tmp_path)
    assert main(["kpcl", "--resume", "t", "--storage", str(copy)]) == 0
    assert _tree(finished) == before                      # not a byte of S0 written
    assert len(load_results(copy / "t")) == 2
    plan = json.loads((copy / "t" / "sweep.json").read_text())
    assert plan["storage"] == str(copy) and plan["mlflow_uri"] is None
    # the report went to the copy's artifact store, through the copy's MLflow store
    client, parents, _ = mlflow_runs(copy, "kpcl")
    artifacts = parents[0].info.artifact_uri
    assert artifacts.startswith(copy.as_uri() + "/")
    assert [a.path for a in client.list_artifacts(parents[0].info.run_id)] == ["report"]
    assert (copy / "mlartifacts").is_dir() and any((copy / "mlartifacts").rglob("report.md"))


def test_a_sweep_folder_moved_without_its_store_resumes_into_the_store_where_it_is(finished, tmp_path, capsys):
    # only the sweep folder travels: the new storage's store never held its runs
    shutil.copytree(finished / "t", tmp_path / "t", symlinks=True)
    assert main(["kpcl", "--resume", "t", "--storage", str(tmp_path)]) == 0
    assert "a new parent run is opened" in capsys.readouterr().out
    rows = load_results(tmp_path / "t")
    _, parents, children = mlflow_runs(tmp_path, "kpcl")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(rows["trial_id"])


def test_rows_without_a_journal_are_not_resumed(finished, tmp_path, capsys):
    copy = tmp_path / "s3"
    shutil.copytree(finished, copy, symlinks=True)
    (copy / "t" / "journal.jsonl").unlink()
    with pytest.raises(SystemExit) as exit_:
        main(["kpcl", "--resume", "t", "--storage", str(copy)])
    assert exit_.value.code == 2 and "its rows have no journal.jsonl" in capsys.readouterr().err


# ---------------------------------------------------------------- one driver per sweep folder

def test_a_stale_lock_of_a_dead_driver_is_broken_and_a_live_one_is_not(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    mine = SweepLock(tmp_path)
    (tmp_path / LOCK).write_text(json.dumps({**mine.record, "pid": int(dead)}))
    SweepLock(tmp_path).acquire().release()               # its holder is gone: taken over
    held = SweepLock(tmp_path).acquire()
    with pytest.raises(Claimed, match=f"pid {os.getpid()}"):
        SweepLock(tmp_path).acquire()
    held.release()
    assert not (tmp_path / LOCK).exists()
    # another host's lock: alive while its heartbeat is fresh, stale once it is old
    (tmp_path / LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "then"}))
    with pytest.raises(Claimed, match="host elsewhere"):
        SweepLock(tmp_path).acquire()
    os.utime(tmp_path / LOCK, (time.time() - 3600, time.time() - 3600))
    SweepLock(tmp_path).acquire().release()


def _sweep(storage, name, *extra):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("STUDY_FAULTS", None)
    return subprocess.Popen([sys.executable, "-m", "study.sweep", *SWEEP, *extra, "--storage", str(storage),
                             "--name", name], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_two_sweeps_with_one_name_the_second_is_refused_and_names_the_holder(tmp_path):
    first, second = _sweep(tmp_path, "same"), _sweep(tmp_path, "same")
    journal = tmp_path / "same" / "journal.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not journal.exists():
        time.sleep(0.2)
    # a --resume of the running sweep is refused the same way
    with pytest.raises(SystemExit) as exit_:
        main(["kpcl", "--resume", "same", "--storage", str(tmp_path)])
    assert exit_.value.code == 2
    codes = sorted(p.wait(timeout=300) for p in (first, second))
    loser = first if first.returncode == 2 else second
    assert codes == [0, 2]
    assert f"in use by a running sweep (host {socket.gethostname()}, pid" in loser.stderr.read()
    rows = load_results(tmp_path / "same")
    assert len(rows) == 2 and not (tmp_path / "same" / "results" / "orphaned").exists()
    _, parents, children = mlflow_runs(tmp_path, "kpcl")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {c.data.tags["trial_id"] for c in children} == set(rows["trial_id"])
    assert not (tmp_path / "same" / LOCK).exists()


def test_a_sweep_interrupted_before_its_first_trial_leaves_a_folder_its_name_can_reuse(tmp_path):
    folder = tmp_path / "early"
    folder.mkdir()
    (folder / "sweep.json").write_text("{}")                  # the plan, then a crash
    from study.checks import check_new_sweep
    from study.sweep import build_parser, validate
    check_new_sweep(folder)                                   # no trials: may be reused
    (folder / "journal.jsonl").write_text('{"n": 0, "trial_id": "a", "slot": 0, "config": {}}\n')
    with pytest.raises(ValueError, match="exists already with trials"):
        validate(build_parser().parse_args([*SWEEP, "--storage", str(tmp_path), "--name", "early"]))


def test_resources_no_node_has_are_refused_once_joined_and_the_name_can_be_reused(ray_cluster, tmp_path,
                                                                                 capsys):
    # A remote cluster (here: the session's, joined by address) is checked once joined.
    import ray
    argv = [*SWEEP, "--num-samples", "1", "--storage", str(tmp_path), "--name", "big",
            "--address", ray.get_runtime_context().gcs_address]
    assert main([*argv, "--cpus-per-trial", "3"]) == 2
    assert ("a trial asks for 3 CPUs and 0 GPUs on one node; the cluster's nodes have 2 CPUs and 0 GPUs"
            in capsys.readouterr().err)
    assert not (tmp_path / "big" / "journal.jsonl").exists()
    assert main(argv) == 0                  # the folder of a sweep without trials is reused
    _, parents, children = mlflow_runs(tmp_path, "kpcl")
    assert sorted(p.info.status for p in parents) == ["FAILED", "FINISHED"] and len(children) == 1


def test_ctrl_c_ends_the_driver_within_seconds_with_the_resume_line(tmp_path):
    proc = _sweep(tmp_path, "c", "--epochs", "50")
    journal = tmp_path / "c" / "journal.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not journal.exists():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    start = time.monotonic()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and time.monotonic() - start < 30
    assert "--resume c" in out


# ------------------------------------------------------- concurrent sweeps into a fresh folder

@pytest.mark.parametrize("sweeps", [4])                 # 2 is a subset of the race: suite time
def test_concurrent_sweeps_into_a_fresh_folder_all_finish_and_rows_match_runs(sweeps, ray_cluster, tmp_path):
    # The drivers join the test session's Ray (one cluster, not one each); the MLflow
    # store in `fresh` does not exist until they race to create it.
    import ray
    address = ray.get_runtime_context().gcs_address
    fresh = tmp_path / "fresh"
    procs = [_sweep(fresh, f"s{i}", "--num-samples", "1", "--address", address) for i in range(sweeps)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * sweeps, "\n".join(
        f"--- s{i}: exit {p.returncode}\n{out[-1500:]}\n{err[-3000:]}"
        for i, (p, (out, err)) in enumerate(zip(procs, outputs)) if p.returncode)
    client, parents, children = mlflow_runs(fresh, "kpcl")
    assert sorted(p.data.tags["sweep"] for p in parents) == [f"s{i}" for i in range(sweeps)]
    assert {p.info.status for p in parents} == {"FINISHED"}
    for parent in parents:
        rows = load_results(fresh / parent.data.tags["sweep"])
        runs = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert sorted(c.data.tags["trial_id"] for c in runs) == sorted(rows["trial_id"])
        for run in runs:
            row = rows.set_index("trial_id").loc[run.data.tags["trial_id"]]
            assert run.data.metrics["lt/top1"] == pytest.approx(row["lt/top1"])
