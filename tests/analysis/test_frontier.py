import numpy as np

from analysis.frontier import pareto_mask


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
