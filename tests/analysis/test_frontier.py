import numpy as np
import pandas as pd
import pytest

from analysis.frontier import hypervolume, pareto_front, pareto_mask


def test_pareto_mask_by_hand():
    pts = np.array([[0.9, 0.5], [0.8, 0.8], [0.5, 0.9], [0.7, 0.7], [0.9, 0.4], [0.5, 0.9]])
    # (0.7, 0.7) is dominated by (0.8, 0.8); (0.9, 0.4) by (0.9, 0.5); equal points both stay
    assert pareto_mask(pts).tolist() == [True, True, True, False, False, True]


def test_minimised_objectives_and_nan_rows():
    # maximise the first, minimise the second: (1.5, 2) is beaten by (2, 1) in both
    pts = np.array([[1.0, 0.2], [2.0, 1.0], [3.0, 5.0], [1.5, 2.0], [np.nan, 0.0]])
    assert pareto_mask(pts, maximize=[True, False]).tolist() == [True, True, True, False, False]


def test_front_agrees_with_optuna_best_trials():
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(0)
    pts = rng.random((40, 2)).round(2)           # rounding makes ties, the hard case
    study = optuna.create_study(directions=["maximize", "maximize"])
    for p in pts:
        trial = study.ask()
        study.tell(trial, list(p))
    best = {t.number for t in study.best_trials}
    assert set(np.flatnonzero(pareto_mask(pts))) == best


def _brute_force(pts):
    n = len(pts)
    return np.array([not any((pts[j] >= pts[i]).all() and (pts[j] > pts[i]).any() for j in range(n))
                     for i in range(n)])


def test_two_objective_sweep_matches_brute_force_with_ties_and_duplicates():
    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(1, 30))
        pts = rng.integers(0, 5, size=(n, 2)).astype(float)   # small integers: many ties and duplicates
        assert pareto_mask(pts).tolist() == _brute_force(pts).tolist(), pts


def test_three_objectives_match_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(50):
        pts = rng.integers(0, 4, size=(int(rng.integers(1, 25)), 3)).astype(float)
        assert pareto_mask(pts).tolist() == _brute_force(pts).tolist()


def test_pareto_front_reads_named_columns_of_a_frame():
    df = pd.DataFrame({"lt/top1": [0.8, 0.7, 0.9], "lt/balancedness": [0.9, 0.95, 0.5], "x": [1, 2, 3]})
    assert pareto_front(df, ["lt/top1", "lt/balancedness"]).tolist() == [True, True, True]
    assert pareto_front(df, ["lt/top1", "x"], maximize=[True, False]).tolist() == [True, False, True]


def _brute_hypervolume(pts, ref) -> float:
    """The union of the boxes [ref, p], by its cells on the grid of all coordinates:
    a cell counts if some point reaches its upper corner in every objective."""
    import itertools
    pts = [p for p in pts if not np.isnan(p).any() and (np.asarray(p) > ref).all()]
    if not pts:
        return 0.0
    axes = [sorted({ref[o], *(p[o] for p in pts)}) for o in range(len(ref))]
    total = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        upper = [axes[o][i + 1] for o, i in enumerate(cell)]
        if any(all(p[o] >= upper[o] for o in range(len(ref))) for p in pts):
            total += np.prod([axes[o][i + 1] - axes[o][i] for o, i in enumerate(cell)])
    return total


def test_hypervolume_by_hand():
    df = pd.DataFrame({"a": [1, 2, 0.5, np.nan, -1], "b": [1, 0.5, 2, 3, 5]})
    # boxes [0,1]x[0,1], [0,2]x[0,.5], [0,.5]x[0,2]: 1 + 1 * 0.5 + 0.5 * 1; NaN and a < 0 add nothing
    assert hypervolume(df, ["a", "b"]) == pytest.approx(2.0)
    assert hypervolume(df, ["a", "b"], reference=(0.5, 0.5)) == pytest.approx(0.5 * 0.5 + 1 * 0 + 0.5 * 0)
    assert hypervolume(df.iloc[:0], ["a", "b"]) == 0.0


@pytest.mark.parametrize("seed", range(40))
def test_hypervolume_equals_the_brute_force_union_of_boxes(seed):
    rng = np.random.default_rng(seed)
    m, n = rng.choice([2, 3]), rng.integers(1, 9)
    pts = rng.integers(0, 5, (n, m)) / 4                   # ties and duplicates are common
    pts[rng.random((n, m)) < 0.05] = np.nan
    ref = rng.choice([0.0, 0.25], m)
    df = pd.DataFrame(pts, columns=[f"o{i}" for i in range(m)])
    assert hypervolume(df, list(df.columns), ref) == pytest.approx(_brute_hypervolume(pts, ref))
