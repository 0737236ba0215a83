"""study.confirm driven by hand: which search trials are confirmed, on which seeds, and
the confirmation searcher's order, journal lines and resume (no Tune run, no cluster)."""

import json

from ray.tune.search import Searcher

from study import journal
from study.confirm import ConfirmSearch, members, new_seeds, points
from trainables import names


def entry(n: int, slot: int, seed: int | None = None, **config) -> journal.Entry:
    return journal.Entry(n, slot, {**config, **({} if seed is None else {"seed": seed})}, [f"old{n}", f"t{n}"])


def search_state() -> journal.Resumed:
    """Two slots. Slot 0: n0 (0.8, 0.5), n2 (0.6, 0.9), n4 (0.7, 0.4, dominated by n0),
    n6 errored. Slot 1: n1 (0.5, 0.5), n3 (0.5, 0.5, equal: both on the front), n5
    (0.9, 0.1). Trials with cells ran on seeds 3 and 4 (seed + round)."""
    entries = [entry(n, n % 2, seed=3 + n // 4, **{"loss.k": n, "data.imbalance_ratio": [1.0, 10.0][n % 2]})
               for n in range(7)]
    done = {0: [0.8, 0.5], 1: [0.5, 0.5], 2: [0.6, 0.9], 3: [0.5, 0.5], 4: [0.7, 0.4], 5: [0.9, 0.1], 6: None}
    return journal.Resumed(entries, done, [], set(), {n: f"t{n}" for n in range(7)})


def test_members_are_each_slots_pareto_front_in_journal_order():
    assert [e.n for e in members(search_state())] == [0, 2, 1, 3, 5]


def test_new_seeds_lie_above_every_seed_the_search_used():
    state = search_state()
    assert new_seeds(state, 0, 3) == [5, 6, 7]                 # the trials' seeds: 3 and 4
    bare = journal.Resumed([entry(0, 0)], {0: [1.0, 1.0]}, [], set(), {0: "t0"})
    assert new_seeds(bare, 11, 2) == [12, 13]                  # no seed in the config: the sweep's


def test_points_are_every_member_on_every_new_seed_naming_the_row_it_confirms():
    planned = points(search_state(), 0, 2)
    assert [(p.slot, p.confirm_of, p.config["seed"]) for p in planned] == [
        (0, "t0", 5), (0, "t0", 6), (0, "t2", 5), (0, "t2", 6), (1, "t1", 5), (1, "t1", 6),
        (1, "t3", 5), (1, "t3", 6), (1, "t5", 5), (1, "t5", 6)]
    assert [p.key for p in planned[:4]] == [(0, 5), (0, 6), (2, 5), (2, 6)]      # (member n, seed)
    # the member's config, the seed replaced
    assert planned[2].config == {"loss.k": 2, "data.imbalance_ratio": 1.0, "seed": 5}


def test_confirm_search_hands_out_the_points_then_finishes_and_journals_them(tmp_path):
    file = tmp_path / journal.FILE
    state = search_state()
    for e in state.entries:                               # the search's lines, as the sweep wrote them
        journal.append(file, {"n": e.n, "trial_id": e.trial_ids[-1], "slot": e.slot, "config": e.config})
    planned = points(state, 0, 2)
    search = ConfirmSearch(planned, file)
    search.resume(state)
    configs = [search.suggest(f"c{i}") for i in range(len(planned))]
    assert search.suggest("extra") is Searcher.FINISHED
    assert [c[names.CONFIRM_OF] for c in configs] == [p.confirm_of for p in planned]
    assert [names.trial_config(c) for c in configs] == [p.config for p in planned]
    lines = [json.loads(line) for line in file.read_text().splitlines()][7:]
    assert [line["n"] for line in lines] == list(range(7, 17))       # after the search's n
    assert [line["confirm_of"] for line in lines] == [p.confirm_of for p in planned]
    assert [line["member"] for line in lines] == [p.member for p in planned]
    assert all(names.CONFIRM_OF not in line["config"] for line in lines)   # private keys stay out


def test_a_resume_reruns_pending_confirmations_first_and_goes_on_with_the_rest(tmp_path):
    file = tmp_path / journal.FILE
    state = search_state()
    planned = points(state, 0, 2)
    for e in state.entries:
        journal.append(file, {"n": e.n, "trial_id": e.trial_ids[-1], "slot": e.slot, "config": e.config})
    first = ConfirmSearch(planned, file)
    first.resume(state)
    for i in range(3):
        first.suggest(f"c{i}")
    # three confirmations journaled; c0 has a row, c1 and c2 were running when the driver stopped
    entries = journal.read(file)
    confirmations = [e for e in entries if e.confirm_of]
    assert [e.confirm_of for e in confirmations] == ["t0", "t0", "t2"]
    resumed = journal.Resumed(entries, {**state.done, 7: [0.8, 0.5]}, [(confirmations[1], None),
                                                                       (confirmations[2], "/ckpt")],
                              set(), {**state.rows, 7: "c0"})
    again = ConfirmSearch(planned, file)
    again.resume(resumed)
    rerun = [again.suggest(f"r{i}") for i in range(2)]
    assert [(c[names.CONFIRM_OF], c["seed"]) for c in rerun] == [("t0", 6), ("t2", 5)]
    assert rerun[1][names.FROM_CHECKPOINT] == "/ckpt"
    rest = [again.suggest(f"n{i}") for i in range(7)]
    assert [(c[names.CONFIRM_OF], c["seed"]) for c in rest] == [(p.confirm_of, p.config["seed"])
                                                               for p in planned[3:]]
    assert again.suggest("extra") is Searcher.FINISHED
    # a member rerun under a new trial id (its row moved away) is matched by its n: nothing twice
    moved = [journal.Entry(e.n, e.slot, e.config, e.trial_ids, confirm_of="new", member=e.member)
             for e in journal.read(file) if e.confirm_of]
    third = ConfirmSearch(points(journal.Resumed(state.entries, state.done, [], set(), {**state.rows, 0: "new0"}),
                                 0, 2), file)
    third.resume(journal.Resumed([*state.entries, *moved], state.done, [], set(), state.rows))
    assert third.left() == 0 and third.suggest("x") is Searcher.FINISHED
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert [line["n"] for line in lines[10:]] == [8, 9, *range(10, 17)]     # reruns keep their n
    assert lines[10]["confirm_of"] == "t0"


def test_the_search_part_of_a_journal_leaves_the_confirmations_out():
    state = search_state()
    confirmation = journal.Entry(7, 0, {"seed": 5}, ["c0"], confirm_of="t0")
    whole = journal.Resumed([*state.entries, confirmation], {**state.done, 7: [0.8, 0.5]}, [], {7},
                            {**state.rows, 7: "c0"})
    search, confirmations = whole.part(confirmations=False), whole.part(confirmations=True)
    assert [e.n for e in search.entries] == list(range(7)) and 7 not in search.done and not search.stopped
    assert [e.n for e in confirmations.entries] == [7] and confirmations.done == {7: [0.8, 0.5]}
    assert confirmations.stopped == {7} and confirmations.rows == {7: "c0"}
