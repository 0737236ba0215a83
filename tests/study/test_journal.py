"""The journal a resumed sweep is rebuilt from (study.journal), and the searchers
that write it, on hand-made folders."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study import journal
from study.searcher import GridSearch, LevelSearch
from study.studies import STUDIES

OBJECTIVES = ["lt/top1", "lt/balancedness"]


def _row(sweep, trial_id, top1, status="ok"):
    folder = sweep / "results" / "trials"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"status": [status], "lt/top1": [top1], "lt/balancedness": [0.5]}),
                   folder / f"{trial_id}.parquet")


def _line(n, trial_id, slot=0, **extra):
    return json.dumps({"n": n, "trial_id": trial_id, "slot": slot, "config": {"seed": n}, **extra})


def test_a_torn_last_line_is_ignored_and_a_torn_middle_line_is_damage(tmp_path):
    file = tmp_path / journal.FILE
    file.write_text(_line(0, "a") + "\n" + _line(1, "b") + "\n" + '{"n": 2, "tri')
    assert [(e.n, e.trial_ids) for e in journal.read(file)] == [(0, ["a"]), (1, ["b"])]
    file.write_text(_line(0, "a") + "\n" + '{"n": 1' + "\n" + _line(2, "c") + "\n")
    with pytest.raises(journal.Damaged, match="line 2"):
        journal.read(file)


def test_a_torn_last_line_is_cut_off_before_the_next_line_is_appended(tmp_path):
    file = tmp_path / journal.FILE
    file.write_text(_line(0, "a") + "\n" + '{"n": 1, "tri')
    journal.append(file, {"n": 1, "trial_id": "b", "slot": 0, "config": {}})
    journal.append(file, {"n": 2, "trial_id": "c", "slot": 0, "config": {}})
    assert [(e.n, e.trial_ids) for e in journal.read(file)] == [(0, ["a"]), (1, ["b"]), (2, ["c"])]


def test_resume_state_splits_finished_from_pending_trials_and_finds_the_newest_checkpoint(tmp_path):
    (tmp_path / journal.FILE).write_text("\n".join([_line(0, "a"), _line(1, "b"), _line(2, "c"),
                                                    _line(1, "b2"), _line(3, "d")]) + "\n")
    _row(tmp_path, "a", 0.7)
    _row(tmp_path, "c", float("nan"), status="diverged")
    import torch
    for trial, epoch in (("b", 1), ("b", 2), ("b2", 1), ("b2", 2)):   # b2 continued b: its newest counts
        folder = tmp_path / f"trial_{trial}" / f"checkpoint_00000{epoch}"
        folder.mkdir(parents=True)
        torch.save({"epoch": epoch}, folder / "state.pt")
    # b2's newest was cut short while Ray copied it: the one before it is taken
    (tmp_path / "trial_b2" / "checkpoint_000002" / "state.pt").write_bytes(b"PK\x03\x04torn")
    resumed = journal.resume_state(tmp_path, OBJECTIVES)
    assert resumed.done == {0: [0.7, 0.5], 2: None}
    assert [(e.n, e.trial_ids, ckpt and ckpt.split("/")[-2:]) for e, ckpt in resumed.pending] == [
        (1, ["b", "b2"], ["trial_b2", "checkpoint_000001"]), (3, ["d"], None)]


def test_a_resumed_search_reruns_pending_trials_first_and_tells_optuna_the_finished_ones(tmp_path):
    file = tmp_path / journal.FILE
    first = LevelSearch(STUDIES["kpcl"].space, OBJECTIVES, [1.0, 10.0], 0, journal_file=file)
    configs = [first.suggest(t) for t in ("a", "b", "c")]
    assert [c["data.imbalance_ratio"] for c in configs] == [1.0, 10.0, 1.0]
    _row(tmp_path, "a", 0.6)
    _row(tmp_path, "c", 0.8)
    again = LevelSearch(STUDIES["kpcl"].space, OBJECTIVES, [1.0, 10.0], 0, journal_file=file)
    again.resume(journal.resume_state(tmp_path, OBJECTIVES))
    assert again.suggest("b-again") == configs[1]             # the same trial, no checkpoint yet
    # the samplers are seeded anew (the first run's seeds would draw its first trials again)
    from study.searcher import resumed_seed
    assert resumed_seed(0, 3) != resumed_seed(0, 0) == 0
    assert again.suggest("d")["data.imbalance_ratio"] == 10.0  # trial 3: slot 3 mod 2
    told = again.study(0).trials                                # a and c, from their rows
    assert [(t.state.name, t.values) for t in told] == [("COMPLETE", [0.6, 0.5]), ("COMPLETE", [0.8, 0.5])]
    assert [t.params for t in told] == [{k: configs[i][k] for k in t.params} for i, t in zip((0, 2), told)]
    assert set(told[0].params) == {"loss.k", "loss.temperature"}
    rerun, new = again.study(1).trials                         # b-again (b's parameters), then d
    assert (rerun.state.name, new.state.name) == ("RUNNING", "RUNNING")
    assert rerun.params == {k: configs[1][k] for k in rerun.params} and rerun.params
    assert [e.trial_ids for e in journal.read(file)] == [["a"], ["b", "b-again"], ["c"], ["d"]]


def test_a_grid_runs_every_point_once_and_a_resumed_grid_skips_the_finished(tmp_path):
    file = tmp_path / journal.FILE
    grid = GridSearch({"loss.name": ["ce", "kcl"]}, [1.0, 10.0], [0], file)
    points = [grid.suggest(str(i)) for i in range(4)]
    assert grid.suggest("5") == grid.FINISHED
    assert sorted((p["loss.name"], p["data.imbalance_ratio"]) for p in points) == [
        ("ce", 1.0), ("ce", 10.0), ("kcl", 1.0), ("kcl", 10.0)]
    for i in (0, 2):
        _row(tmp_path, str(i), 0.5)
    again = GridSearch({"loss.name": ["ce", "kcl"]}, [1.0, 10.0], [0], file)
    again.resume(journal.resume_state(tmp_path, OBJECTIVES))
    assert [again.suggest(t) for t in ("x", "y")] == [points[1], points[3]]
    assert again.suggest("z") == again.FINISHED
