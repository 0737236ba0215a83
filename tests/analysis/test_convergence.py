"""Convergence: a trial's last kNN accuracy against its loss's measured plateau, by hand."""

import json
import math

import pandas as pd
import pytest

from analysis.convergence import Plateau, convergence_table, epochs_to, main, measure, plateau_of

CURVE = [0.10, 0.30, 0.50, 0.60, 0.62, 0.61, 0.63, 0.62, 0.62, 0.61, 0.64, 0.60, 0.62, 0.61, 0.63, 0.62, 0.61,
         0.62, 0.63, 0.61]                           # 20 epochs: the last 10% is epochs 19 and 20


def test_the_plateau_is_the_mean_of_the_last_tenth_and_the_epochs_to_90_percent():
    assert plateau_of(CURVE) == pytest.approx((0.63 + 0.61) / 2)
    assert plateau_of([0.5]) == 0.5 and plateau_of(CURVE, tail=0.5) == pytest.approx(sum(CURVE[10:]) / 10)
    assert epochs_to(CURVE, 0.9, 0.62) == 4                   # 0.60 >= 0.558; 0.50 is not
    assert epochs_to(CURVE, 0.9, 1.0) is None


def test_each_trial_gets_its_last_epochs_knn_accuracy_over_its_losss_plateau():
    rows = pd.DataFrame([{"trial_id": t, "loss.name": loss, "data.dataset": "shapes", "model.arch": "cnn",
                          "data.imbalance_ratio": 10.0} for t, loss in (("a", "kcl"), ("b", "simclr"))])
    curves = {"a": [0.2, 0.5, 0.6], "b": [0.1, 0.2]}
    history = pd.DataFrame([{"trial_id": t, "epoch": e, "knn_acc": acc}
                            for t, accs in curves.items() for e, acc in enumerate(accs, 1)])
    plateaus = {("kcl", "shapes", "cnn"): (Plateau(0.75, 300, 40, "by hand"), Plateau(0.5, 300, 40, "", 100.0))}
    table = convergence_table(rows, history.sample(frac=1, random_state=0), plateaus).set_index("trial_id")
    assert table.loc["a", "epoch"] == 3 and table.loc["a", "convergence"] == pytest.approx(0.6 / 0.75)
    assert table.loc["a", "plateau ratio"] == 10
    assert math.isnan(table.loc["b", "plateau"]) and math.isnan(table.loc["b", "convergence"])   # no reference


def test_a_long_trials_json_becomes_a_plateaus_row(tmp_path, capsys):
    result = {"config": {"loss.name": "kcl", "data.dataset": "shapes", "model.arch": "cnn", "data.imbalance_ratio": 100},
              "history": [{"epoch": e, "knn_acc": acc} for e, acc in enumerate(CURVE, 1)]}
    key, plateau = measure(result)
    assert key == ("kcl", "shapes", "cnn") and plateau.knn_acc == 0.62 and plateau.epochs == 20
    assert plateau.to_90 == 4
    (tmp_path / "kcl.json").write_text(json.dumps(result))
    assert main([str(tmp_path / "kcl.json"), "--figure", str(tmp_path / "curves.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("('kcl', 'shapes', 'cnn'): Plateau(knn_acc=0.62, epochs=20, to_90=4") and "ratio=100" in out
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_the_interval_table_gives_mean_and_t_interval_per_loss_and_level():
    from analysis.convergence import interval_table
    rows = pd.DataFrame({"loss.name": ["kcl"] * 3 + ["ce"], "data.imbalance_ratio": [10.0] * 4,
                         "lt/top1": [0.70, 0.74, 0.72, 0.9], "convergence": [0.8, 0.9, 1.0, 0.95]})
    table = interval_table(rows).set_index("loss")
    half = 4.302652729911275 * 0.02 / 3 ** 0.5                   # t(0.975, 2) * sd / sqrt(n)
    assert table.loc["kcl", "trials"] == 3
    assert table.loc["kcl", "lt top-1"] == f"0.720 [{0.72 - half:.3f}, {0.72 + half:.3f}]"
    half = 4.302652729911275 * 0.1 / 3 ** 0.5
    assert table.loc["kcl", "convergence"] == f"0.900 [{0.9 - half:.3f}, {0.9 + half:.3f}]"
    assert table.loc["ce", "lt top-1"] == "0.900"                # one trial: no interval
    assert table.loc["ce", "lt p(V)"] == "nan"                   # a column the rows lack


def test_the_reference_plateau_is_the_one_measured_at_the_nearest_ratio():
    from analysis.convergence import reference
    at = {r: Plateau(0.9 - r / 1000, 200, 40, "", r) for r in (10.0, 100.0)}
    both = tuple(at.values())
    assert reference(both, 100.0) is at[100.0] and reference(both, 10.0) is at[10.0]
    assert reference(both, 1.0) is at[10.0]                       # log distance 1 against 2
    assert reference(both, 40.0) is at[100.0]                     # log10(40) = 1.6: nearer 100
    assert reference((), 10.0) is None and reference(None, 10.0) is None
