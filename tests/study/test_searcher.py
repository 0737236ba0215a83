"""LevelSearch driven by hand: suggest() and on_trial_complete() called directly, as
Tune's controller would call them, without a Tune run or a Ray cluster."""

import optuna
import pytest
import ray
from optuna.trial import TrialState

from study.searcher import LevelSearch
from trainables import names

METRICS = ["lt/top1", "lt/balancedness"]
CELLS = [{"loss.name": "simclr"}, {"loss.name": "ce"}]
LOW, HIGH = 0.05, 0.5


def space(trial):
    trial.suggest_float("loss.temperature", LOW, HIGH, log=True)
    return {"loss.name": "kcl"}


def _study(search: LevelSearch, slot: int) -> optuna.Study:
    return search.study(slot)


def _first_suggestion(seed: int, ratio_range=None) -> dict:
    """What a bare Optuna study, sampled as study.searcher.sampler does (TPE, seed,
    3 startup trials, two maximised objectives), suggests first: no Ray involved."""
    study = optuna.create_study(directions=["maximize"] * 2,
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3))
    trial = study.ask()
    if ratio_range:
        trial.suggest_float("data.imbalance_ratio", *ratio_range, log=True)
    space(trial)
    return trial.params


def _values(config: dict) -> dict:
    """A made-up final report that depends on the config (so TPE has something to model)."""
    t = config["loss.temperature"]
    return {"lt/top1": 1 - t, "lt/balancedness": t * 0.5 + 0.1, "epoch": 3}


def test_trial_n_goes_to_slot_n_mod_slots_levels_major_with_seed_plus_round():
    initialized = ray.is_initialized()
    search = LevelSearch(space, METRICS, [1, 10, 100], 7, None, CELLS)
    configs = [search.suggest(f"t{n}") for n in range(12)]
    slots = [(1, "simclr"), (1, "ce"), (10, "simclr"), (10, "ce"), (100, "simclr"), (100, "ce")]
    assert search.slots == [(level, {"loss.name": loss}) for level, loss in slots]
    # levels-major round robin: each (level, cell) exactly twice, once per round
    assert [(c["data.imbalance_ratio"], c["loss.name"]) for c in configs] == slots * 2
    assert [c["seed"] for c in configs] == [7] * 6 + [8] * 6          # round r: seed + r
    assert search.slot_of == {f"t{n}": n % 6 for n in range(12)}
    assert all(set(c) == {"loss.temperature", "loss.name", "seed", "data.imbalance_ratio"} for c in configs)
    # slot i's study was asked for trials i and i + 6, and nothing else
    for i in range(6):
        asked = [t.params["loss.temperature"] for t in _study(search, i).trials]
        assert asked == [configs[i]["loss.temperature"], configs[i + 6]["loss.temperature"]]
    assert ray.is_initialized() == initialized          # no cluster was started for this


def test_without_cells_the_space_keeps_its_constants_and_no_seed_is_set():
    search = LevelSearch(space, METRICS, [1, 10, 100], 7)
    configs = [search.suggest(f"t{n}") for n in range(7)]
    assert [c["data.imbalance_ratio"] for c in configs] == [1, 10, 100, 1, 10, 100, 1]
    assert [c["loss.name"] for c in configs] == ["kcl"] * 7
    assert all(set(c) == {"loss.temperature", "loss.name", "data.imbalance_ratio"} for c in configs)


def test_ratio_range_is_one_slot_whose_study_searches_the_ratio():
    search = LevelSearch(space, METRICS, [1, 10, 100], 5, (2.0, 50.0))
    assert search.slots == [(None, {})]                 # the named levels are not used
    configs = [search.suggest(f"t{n}") for n in range(5)]
    assert search.slot_of == {f"t{n}": 0 for n in range(5)}
    trials = _study(search, 0).trials
    for config, trial in zip(configs, trials, strict=True):
        assert set(config) == {"loss.temperature", "loss.name", "data.imbalance_ratio"}
        assert config["data.imbalance_ratio"] == trial.params["data.imbalance_ratio"]
        assert 2.0 <= config["data.imbalance_ratio"] <= 50.0
        assert LOW <= config["loss.temperature"] <= HIGH
    assert len({c["data.imbalance_ratio"] for c in configs}) == 5    # searched, not fixed
    first = _first_suggestion(5, (2.0, 50.0))
    assert configs[0]["data.imbalance_ratio"] == first["data.imbalance_ratio"]
    assert configs[0]["loss.temperature"] == first["loss.temperature"]


def test_diverged_and_errored_trials_are_failures_in_their_own_slot_only():
    search = LevelSearch(space, METRICS, [1, 10], 0)
    configs = {f"t{n}": search.suggest(f"t{n}") for n in range(6)}    # slot 0: t0 t2 t4; 1: t1 t3 t5
    search.on_trial_complete("t0", {"lt/top1": 0.6, "lt/balancedness": 0.9, "epoch": 3})
    search.on_trial_complete("t2", {"lt/top1": 0.5, "epoch": 3, "status": "diverged"})   # no p(V)
    search.on_trial_complete("t4", None)                                # no final report at all
    search.on_trial_complete("t1", error=True)                          # as Tune reports a crash
    search.on_trial_complete("unknown", {"lt/top1": 0.1, "lt/balancedness": 0.1})   # ignored
    slot0, slot1 = _study(search, 0).trials, _study(search, 1).trials
    assert [t.state for t in slot0] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert slot0[0].values == [0.6, 0.9]
    assert slot0[1].values is None and slot0[2].values is None          # nothing made up
    assert [t.params["loss.temperature"] for t in slot0] == [configs[t]["loss.temperature"]
                                                             for t in ("t0", "t2", "t4")]
    assert [t.state for t in slot1] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING]
    # a complete trial of slot 1 is told to slot 1's study, with its values
    search.on_trial_complete("t3", {"lt/top1": 0.25, "lt/balancedness": 0.75})
    slot0, slot1 = _study(search, 0).trials, _study(search, 1).trials
    assert [t.state for t in slot1] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.RUNNING]
    assert slot1[1].values == [0.25, 0.75]
    assert [t.values for t in slot0 if t.state == TrialState.COMPLETE] == [[0.6, 0.9]]


def test_a_trial_the_scheduler_stopped_is_pruned_not_complete():
    # MO-ASHA stopped it at a rung: its last report is that epoch's, whose payload holds
    # test metrics of a half-trained encoder; Optuna must not take them as final values
    search = LevelSearch(space, METRICS, [1], 0)
    for n in range(2):
        search.suggest(f"t{n}")
    search.on_trial_complete("t0", {names.EPOCH: 1, names.KNN_ACC: 0.5, names.RESULT_PAYLOAD: "{}"})
    search.on_trial_complete("t1", {"lt/top1": 0.6, "lt/balancedness": 0.9, names.STATUS: "ok"})
    trials = _study(search, 0).trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[0].values is None and [t.number for t in _study(search, 0).best_trials] == [1]


def _run(search: LevelSearch, n: int, start: int = 0) -> list[dict]:
    """Suggest n trials, completing each at once with values that depend on its config."""
    configs = []
    for i in range(start, start + n):
        config = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", _values(config))
        configs.append(config)
    return configs


def test_same_seed_same_suggestions_and_each_slot_has_its_own_seed():
    # 16 trials over 2 slots: 8 each, so TPE models after its 3 startup trials
    first = _run(LevelSearch(space, METRICS, [1, 10], 11), 16)
    again = _run(LevelSearch(space, METRICS, [1, 10], 11), 16)
    assert first == again
    other = _run(LevelSearch(space, METRICS, [1, 10], 12), 16)
    assert [c["loss.temperature"] for c in other] != [c["loss.temperature"] for c in first]
    # slot i samples with seed + i: its first suggestion is a bare Optuna study's under that seed
    assert first[0]["loss.temperature"] == _first_suggestion(11)["loss.temperature"]
    assert first[1]["loss.temperature"] == _first_suggestion(12)["loss.temperature"]
    assert first[0]["loss.temperature"] != first[1]["loss.temperature"]
    # seed 12's slot 0 is seed 11's slot 1
    assert other[0]["loss.temperature"] == first[1]["loss.temperature"]


def _rows(sweep, trial_ids, configs, results) -> None:
    """The Parquet rows the sweep would have written for these finished trials."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    folder = sweep / "results" / "trials"
    folder.mkdir(parents=True, exist_ok=True)
    for trial_id, config in zip(trial_ids, configs):
        values = results(config)
        pq.write_table(pa.table({"status": ["ok"], **{m: [values.get(m)] for m in METRICS}}),
                       folder / f"{trial_id}.parquet")


def test_a_resumed_search_continues_from_its_journal_and_rows(tmp_path):
    from study.journal import FILE, resume_state
    args = (space, METRICS, [1, 10], 3, None, CELLS)        # 4 slots: (1, simclr) (1, ce) (10, simclr) (10, ce)
    original = LevelSearch(*args, journal_file=tmp_path / FILE)
    configs = [original.suggest(f"t{n}") for n in range(9)]  # slots 0 1 2 3 0 1 2 3 0
    for n in range(7):
        original.on_trial_complete(f"t{n}", _values(configs[n]))
    _rows(tmp_path, [f"t{n}" for n in range(7)], configs[:7], _values)   # t7 and t8 still ran

    resumed = LevelSearch(*args, journal_file=tmp_path / FILE)
    resumed.resume(resume_state(tmp_path, METRICS))
    # the unfinished trials run again first, with their own configs, in their own slots
    assert [resumed.suggest("t7b"), resumed.suggest("t8b")] == configs[7:9]
    assert resumed.slot_of == {"t7b": 3, "t8b": 0}
    for search, (t7, t8) in ((original, ("t7", "t8")), (resumed, ("t7b", "t8b"))):
        search.on_trial_complete(t7, {"lt/top1": 0.4, "lt/balancedness": 0.3})
        search.on_trial_complete(t8, {"lt/top1": 0.4, "status": "diverged"})
    # every slot's study holds what the uninterrupted one holds: states, values, parameters
    for slot in range(4):
        assert ([(t.state, t.values, t.params) for t in _study(resumed, slot).trials]
                == [(t.state, t.values, t.params) for t in _study(original, slot).trials])
    assert [t.state for t in _study(resumed, 0).trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]

    later = _run(resumed, 12, start=9)
    # the round robin goes on at slot 9 mod 4 = 1, in round 9 // 4 = 2 (seed 3 + 2)
    assert [(c["data.imbalance_ratio"], c["loss.name"]) for c in later[:4]] == [
        (1, "ce"), (10, "simclr"), (10, "ce"), (1, "simclr")]
    assert [c["seed"] for c in later] == [5, 5, 5] + [6] * 4 + [7] * 4 + [8]
    assert resumed.started == 21
    # the samplers are seeded anew: slot 1's next draw (still random: 2 trials told) is not
    # its first trial's again, as a sampler seeded as in the first run would draw it
    searched = set(_study(resumed, 1).trials[0].params)
    assert {k: later[0][k] for k in searched} != {k: configs[1][k] for k in searched}


def test_a_resumed_ratio_range_search_keeps_searching_the_ratio(tmp_path):
    from study.journal import FILE, resume_state
    original = LevelSearch(space, METRICS, [1, 10], 9, (2.0, 50.0), journal_file=tmp_path / FILE)
    configs = _run(original, 4)
    _rows(tmp_path, [f"t{n}" for n in range(4)], configs, _values)
    resumed = LevelSearch(space, METRICS, [1, 10], 9, (2.0, 50.0), journal_file=tmp_path / FILE)
    resumed.resume(resume_state(tmp_path, METRICS))
    assert [t.params["data.imbalance_ratio"] for t in _study(resumed, 0).trials] == [
        c["data.imbalance_ratio"] for c in configs]
    later = _run(resumed, 6, start=4)
    assert all(2.0 <= c["data.imbalance_ratio"] <= 50.0 for c in later)
    assert len(_study(resumed, 0).trials) == 10


def test_a_resumed_search_tells_a_stopped_trial_pruned_though_its_row_has_metrics(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from study.journal import FILE, resume_state
    original = LevelSearch(space, METRICS, [1], 0, journal_file=tmp_path / FILE)
    for n in range(2):
        original.suggest(f"t{n}")
    folder = tmp_path / "results" / "trials"
    folder.mkdir(parents=True)
    for n, status in enumerate(["stopped", "ok"]):        # both rows hold test metrics
        pq.write_table(pa.table({"status": [status], "lt/top1": [0.5 + n / 10], "lt/balancedness": [0.8]}),
                       folder / f"t{n}.parquet")
    state = resume_state(tmp_path, METRICS)
    assert state.done == {0: None, 1: [0.6, 0.8]} and state.stopped == {0}
    resumed = LevelSearch(space, METRICS, [1], 0, journal_file=tmp_path / FILE)
    resumed.resume(state)
    assert [t.state for t in _study(resumed, 0).trials] == [TrialState.PRUNED, TrialState.COMPLETE]


def _sqlite(tmp_path):
    from study.optuna_store import open_storage
    return open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_the_studies_live_in_the_storage_named_by_sweep_and_slot_with_metric_names_and_attributes(tmp_path):
    from study.optuna_store import trials_of_sweep
    search = LevelSearch(space, METRICS, [1, 10], 0, None, CELLS, storage=_sqlite(tmp_path), sweep="sel-1",
                         attrs={"study": "select", "sweep": "sel-1", "git_commit": "abc"})
    _run(search, 6)
    # another process (optuna-dashboard) sees them while the sweep runs
    names_ = ["sel-1:ratio=1,loss.name=simclr", "sel-1:ratio=1,loss.name=ce",
              "sel-1:ratio=10,loss.name=simclr", "sel-1:ratio=10,loss.name=ce"]
    assert trials_of_sweep(f"sqlite:///{tmp_path / 'optuna.db'}", "sel-1") == dict(zip(names_, [2, 2, 1, 1]))
    study = optuna.load_study(study_name=names_[3], storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.metric_names == METRICS and study.directions[0].name == "MAXIMIZE"
    assert study.user_attrs == {"study": "select", "sweep": "sel-1", "git_commit": "abc", "level": 10,
                                "cell": {"loss.name": "ce"}}
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def test_a_resumed_search_takes_up_its_studies_in_the_storage_without_duplicates(tmp_path):
    """The driver stopped with t1 told, t2 finished (a row) but not told, t3 running and t4
    asked but never journaled: the resume tells t2 from its row, reruns t3 as the same
    Optuna trial, fails t4's orphan, and the counts add up."""
    from study.journal import FILE, read, resume_state
    args = (space, METRICS, [1], 0)
    original = LevelSearch(*args, journal_file=tmp_path / FILE, storage=_sqlite(tmp_path), sweep="s")
    configs = [original.suggest(f"t{n}") for n in range(1, 4)]
    original.on_trial_complete("t1", _values(configs[0]))
    _rows(tmp_path, ["t1", "t2"], configs[:2], _values)
    original.study(0).ask()                               # t4: asked, the journal line never written
    resumed = LevelSearch(*args, journal_file=tmp_path / FILE, storage=_sqlite(tmp_path), sweep="s")
    resumed.resume(resume_state(tmp_path, METRICS))
    assert resumed.suggest("t3b") == configs[2]
    assert resumed.number_of == {"t3b": 2}                # t3's own Optuna trial, not a new one
    trials = resumed.study(0).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING,
                                         TrialState.FAIL]
    assert trials[1].values == list(_values(configs[1]).values())[:2]
    resumed.on_trial_complete("t3b", _values(configs[2]))
    new = resumed.suggest("t5")
    resumed.on_trial_complete("t5", _values(new))
    assert len(resumed.study(0).trials) == 5 and [e.optuna_trial for e in read(tmp_path / FILE)] == [0, 1, 2, 4]
    assert not [t for t in resumed.study(0).trials if t.state == TrialState.RUNNING]
    # resuming again from the same state changes nothing in the storage
    again = LevelSearch(*args, journal_file=tmp_path / FILE, storage=_sqlite(tmp_path), sweep="s")
    _rows(tmp_path, ["t3b", "t5"], [configs[2], new], _values)
    again.resume(resume_state(tmp_path, METRICS))
    assert [(t.state, t.values) for t in again.study(0).trials] == [
        (t.state, t.values) for t in resumed.study(0).trials]


def test_resuming_again_and_again_from_a_rebuilt_study_never_adds_a_trial_twice(tmp_path):
    """The first resume rebuilds the study from the journal (the sweep folder was copied without
    its database), with a pending trial between finished ones; every later resume finds each
    trial by its journal n, whatever number the rebuilt study gave it."""
    from study.journal import FILE, resume_state
    args = (space, METRICS, [1], 0)
    original = LevelSearch(*args, journal_file=tmp_path / FILE)              # its studies in memory
    configs = [original.suggest(f"t{n}") for n in range(3)]
    _rows(tmp_path, ["t0", "t2"], [configs[0], configs[2]], _values)          # t1 has no row yet
    counts = []
    for resume in range(3):
        again = LevelSearch(*args, journal_file=tmp_path / FILE, storage=_sqlite(tmp_path), sweep="s")
        again.resume(resume_state(tmp_path, METRICS))
        counts.append([(t.user_attrs["n"], t.state.name) for t in again.study(0).trials])
    assert counts[0] == [(0, "COMPLETE"), (2, "COMPLETE")]                    # t1 waits for its rerun
    assert counts[1] == counts[2] == counts[0]
    assert again.suggest("t1b") == configs[1] and [t.user_attrs["n"] for t in again.study(0).trials] == [0, 2, 1]


def test_a_study_of_the_same_name_with_another_sweeps_trials_is_refused(tmp_path):
    from study.searcher import StudyTaken
    mine = {"sweep_id": "a" * 32}
    _run(LevelSearch(space, METRICS, [1], 0, storage=_sqlite(tmp_path), sweep="x", attrs=mine), 2)
    LevelSearch(space, METRICS, [1], 0, storage=_sqlite(tmp_path), sweep="x", attrs=mine)   # its own: taken up
    with pytest.raises(StudyTaken, match="holds study x:ratio=1 with trials of another sweep"):
        LevelSearch(space, METRICS, [1], 0, storage=_sqlite(tmp_path), sweep="x", attrs={"sweep_id": "b" * 32})
    # a study of that name without trials (a sweep that failed before its first) is taken over
    empty = LevelSearch(space, METRICS, [10], 0, storage=_sqlite(tmp_path), sweep="y", attrs=mine)
    LevelSearch(space, METRICS, [10], 0, storage=_sqlite(tmp_path), sweep="y", attrs={"sweep_id": "c" * 32})
    assert empty.study(0).user_attrs["sweep_id"] == "c" * 32
