"""The report on a small result set written through the sweep's own Parquet writer."""

import copy
import math

import numpy as np
import pandas as pd
import pytest

from analysis.report import main, write_report
from analysis.results import load_results
from analysis.tables import add_derived, level_table, sigma_ranking, slope_table
from study.parquet_sink import ParquetSink
from trainables.config import TrialConfig
from trainables.presets import SMOKE
from trainables.metrics import balancedness, summarize
from trainables.trial import run_trial

LOSSES, RATIOS, SEEDS = ("ce", "simclr", "kcl"), (1.0, 10.0, 100.0), (0, 1)


def _variant(template: dict, loss: str, ratio: float, seed: int, rng) -> dict:
    """A trial result for (loss, ratio, seed): the real template's structure with
    per-class accuracies drawn so that imbalance hurts CE more than the others."""
    result = copy.deepcopy(template)
    cfg = TrialConfig.from_flat({**SMOKE, "loss.name": loss, "data.imbalance_ratio": ratio, "seed": seed})
    result["config"], result["seed"] = cfg.to_flat(), seed
    counts = np.array(result["class_counts"], dtype=float)
    penalty = {"ce": 0.15, "simclr": 0.05, "kcl": 0.03}[loss] * np.log10(ratio)
    for probe in ("lt", "balanced"):
        acc = np.clip(0.8 - penalty * (1 - counts / counts.max()) + rng.normal(0, 0.03, len(counts)), 0, 1)
        result["probes"][probe] = summarize(acc.tolist(), result["class_counts"])
    return result


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Two sweeps (the second holds only KCL), written through ParquetSink."""
    root = tmp_path_factory.mktemp("results")
    template = run_trial(TrialConfig.from_flat(SMOKE)).to_dict()
    rng = np.random.default_rng(0)
    for sweep, losses in (("fig2", LOSSES[:2]), ("kpcl", LOSSES[2:])):
        sink = ParquetSink(root / sweep / "results", {"study": sweep, "sweep": sweep,
                                                      "git_commit": "x", "versions": {}})
        for loss in losses:
            for ratio in RATIOS:
                for seed in SEEDS:
                    result = _variant(template, loss, ratio, seed, rng)
                    sink.write(f"{loss}-{ratio:g}-{seed}", result["config"], result)
    return root


def test_several_sweeps_load_into_one_frame(sweeps):
    df = load_results([sweeps / "fig2", sweeps / "kpcl"]).set_index("trial_id")
    expected = {f"{loss}-{ratio:g}-{seed}": (loss, ratio, seed)
                for loss in LOSSES for ratio in RATIOS for seed in SEEDS}
    assert sorted(df.index) == sorted(expected)
    for trial_id, (loss, ratio, seed) in expected.items():
        row = df.loc[trial_id]
        assert row["sweep"] == ("kpcl" if loss == "kcl" else "fig2")
        assert (row["loss.name"], row["data.imbalance_ratio"], row["seed"]) == (loss, ratio, seed)
        # the stored summary is the one of the stored per-class accuracies (balanced test set)
        assert row["lt/top1"] == pytest.approx(np.mean(row["lt/per_class_acc"]), rel=1e-12)
    assert df["data.imbalance_ratio"].dtype == float and df["seed"].dtype.kind == "i"


def test_level_table_equals_a_direct_pandas_computation(sweeps):
    df = add_derived(load_results([sweeps / "fig2", sweeps / "kpcl"]))
    table = level_table(df, "lt").set_index(["loss", "ratio"])
    for (loss, ratio), group in df.groupby(["loss.name", "data.imbalance_ratio"]):
        row = table.loc[(loss, ratio)]
        assert row["trials"] == 2
        assert row["top1"] == pytest.approx(group["lt/top1"].mean())
        assert row["top1 std"] == pytest.approx(group["lt/top1"].std())
        assert row["few"] == pytest.approx(group["lt/few"].mean())
        assert row["p(V)"] == pytest.approx(group["lt/balancedness"].mean())
        cv = [np.std(a) / np.mean(a) for a in group["lt/per_class_acc"]]
        assert row["CV"] == pytest.approx(np.mean(cv))


def test_sigma_recomputation_equals_balancedness(sweeps):
    df = add_derived(load_results(sweeps / "fig2"), sigmas=[0.1, 0.5, 1.0])
    for _, row in df.iterrows():
        for sigma in (0.1, 0.5, 1.0):
            assert row[f"lt/balancedness@{sigma:g}"] == pytest.approx(
                balancedness(list(row["lt/per_class_acc"]), sigma), rel=1e-12)
        assert row["lt/balancedness@0.1"] == pytest.approx(row["lt/balancedness"])


def _hand_made(rows) -> pd.DataFrame:
    """A results frame holding only what add_derived and sigma_ranking read:
    rows of (loss, ratio, long-tailed probe's per-class accuracies)."""
    return pd.DataFrame({"loss.name": [r[0] for r in rows], "data.imbalance_ratio": [r[1] for r in rows],
                         "class_counts": [[100] + [10] * (len(r[2]) - 1) for r in rows],
                         "lt/per_class_acc": [r[2] for r in rows]})


# p(V) = (1/C^2) sum_ij exp(-(a_i - a_j)^2 / sigma), by hand:
#   [0, 0.5]:      C = 2, two pairs 0.5 apart  -> (2 + 2 exp(-0.25 / s)) / 4
#                  s = 0.1: (1 + e^-2.5) / 2 = 0.54104;  s = 1: (1 + e^-0.25) / 2 = 0.88940
#   [0, 0, 0, 1]:  C = 4, 10 equal pairs, 6 pairs 1 apart -> (10 + 6 exp(-1 / s)) / 16
#                  s = 0.1: (10 + 6 e^-10) / 16 = 0.62502; s = 1: (10 + 6 e^-1) / 16 = 0.76296
# so at ratio 10 KCL ([0, 0, 0, 1]) ranks first at sigma 0.1 and SimCLR ([0, 0.5]) at sigma 1:
# a narrow kernel counts the three equal classes, a wide one the size of the gaps.
#   [0.5, 0.5] -> 1 at every sigma; [0.2, 0.6] -> (1 + exp(-0.16 / s)) / 2; [0, 1] -> (1 + exp(-1 / s)) / 2
# so at ratio 100 SimCLR (mean of 1 and (1 + e^(-0.16/s)) / 2) beats KCL ((1 + e^(-1/s)) / 2) at every sigma.
P_A = {0.1: (1 + math.exp(-2.5)) / 2, 1.0: (1 + math.exp(-0.25)) / 2}
P_B = {0.1: (10 + 6 * math.exp(-10)) / 16, 1.0: (10 + 6 * math.exp(-1)) / 16}
CROSSING = [("simclr", 10.0, [0.0, 0.5]), ("kcl", 10.0, [0.0, 0.0, 0.0, 1.0])]
STEADY = [("simclr", 100.0, [0.5, 0.5]), ("simclr", 100.0, [0.2, 0.6]), ("kcl", 100.0, [0.0, 1.0]),
          ("kcl", 100.0, [0.0, 1.0])]


def test_sigma_recomputation_matches_hand_computed_values():
    df = add_derived(_hand_made(CROSSING + STEADY), probes=("lt",), sigmas=[0.1, 1.0])
    for sigma in (0.1, 1.0):
        column = df[f"lt/balancedness@{sigma:g}"].tolist()
        assert column == pytest.approx([P_A[sigma], P_B[sigma], 1.0, (1 + math.exp(-0.16 / sigma)) / 2,
                                        (1 + math.exp(-1 / sigma)) / 2, (1 + math.exp(-1 / sigma)) / 2],
                                       rel=1e-12)
    assert P_B[0.1] > P_A[0.1] and P_A[1.0] > P_B[1.0]          # the crossing the next test relies on
    # CV = population std / mean: [0, 0.5] -> 0.25 / 0.25; [0, 0, 0, 1] -> sqrt(3) / 4 / (1 / 4)
    assert df["lt/acc_cv"].tolist()[:2] == pytest.approx([1.0, math.sqrt(3)], rel=1e-12)


def test_sigma_ranking_changes_when_the_kernel_width_reorders_the_losses():
    df = add_derived(_hand_made(CROSSING + STEADY), probes=("lt",), sigmas=[0.1, 1.0])
    table, changed = sigma_ranking(df, [0.1, 1.0])
    assert table.to_dict("records") == [
        {"ratio": 10.0, "sigma": 0.1, "ranking by p(V)": "kcl > simclr"},
        {"ratio": 10.0, "sigma": 1.0, "ranking by p(V)": "simclr > kcl"},
        {"ratio": 100.0, "sigma": 0.1, "ranking by p(V)": "simclr > kcl"},
        {"ratio": 100.0, "sigma": 1.0, "ranking by p(V)": "simclr > kcl"},
    ]
    assert changed is True


def test_sigma_ranking_unchanged_when_no_level_reorders():
    df = add_derived(_hand_made(STEADY), probes=("lt",), sigmas=[0.1, 0.5, 1.0])
    table, changed = sigma_ranking(df, [0.1, 0.5, 1.0])
    assert table.to_dict("records") == [
        {"ratio": 100.0, "sigma": s, "ranking by p(V)": "simclr > kcl"} for s in (0.1, 0.5, 1.0)]
    assert changed is False


def test_slope_of_balancedness_follows_the_built_in_penalty(sweeps):
    df = load_results([sweeps / "fig2", sweeps / "kpcl"])
    slopes = slope_table(df).set_index("loss")
    # CE's accuracies fall fastest with imbalance, so its p(V) slope is the most negative
    assert slopes.loc["ce", "slope"] < slopes.loc["simclr", "slope"] < 0
    for loss in LOSSES:
        x = np.log10(df.loc[df["loss.name"] == loss, "data.imbalance_ratio"])
        y = df.loc[df["loss.name"] == loss, "lt/balancedness"]
        assert slopes.loc[loss, "slope"] == pytest.approx(np.polyfit(x, y, 1)[0])
        assert slopes.loc[loss, "ci low"] < slopes.loc[loss, "slope"] < slopes.loc[loss, "ci high"]


def test_report_writes_every_figure_and_quotes_the_table(sweeps, tmp_path):
    path = write_report([sweeps / "fig2", sweeps / "kpcl"], tmp_path)
    text = path.read_text()
    for name in ("figure2", "tradeoff", "kcl_knobs", "head_tail"):
        png = tmp_path / f"{name}.png"
        assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
        assert f"({name}.png)" in text
    df = add_derived(load_results([sweeps / "fig2", sweeps / "kpcl"]), sigmas=[0.1, 0.5, 1.0])
    assert "Sweeps: fig2, kpcl. Trials: 18 (18 ok); the tables use the ok ones." in text
    # every per-level row of both probes' tables, each number computed here with pandas
    for probe in ("lt", "balanced"):
        for (loss, ratio), group in df.groupby(["loss.name", "data.imbalance_ratio"]):
            numbers = [group[f"{probe}/top1"].mean(), group[f"{probe}/top1"].std(ddof=1),
                       *(group[f"{probe}/{m}"].mean() for m in ("many", "medium", "few", "balancedness")),
                       np.mean([np.std(a) / np.mean(a) for a in group[f"{probe}/per_class_acc"]])]
            row = f"| {loss} | {ratio:g} | 2 | " + " | ".join(f"{v:.3f}" for v in numbers) + " |"
            assert row in text, row
    # the slope section: least-squares slope and its 95% t interval (scipy.stats, n - 2 dof)
    from scipy import stats
    for probe, name in (("lt", "long-tailed probe"), ("balanced", "balanced probe")):
        for loss in LOSSES:
            group = df[df["loss.name"] == loss]
            fit = stats.linregress(np.log10(group["data.imbalance_ratio"]), group[f"{probe}/balancedness"])
            half = stats.t.ppf(0.975, len(group) - 2) * fit.stderr
            row = f"| {name} | {loss} | 6 | {fit.slope:.3f} | {fit.slope - half:.3f} | {fit.slope + half:.3f} |"
            assert row in text, row
    # the sigma section: each level's ranking by mean p(V), best first, at each sigma (the
    # table prints a non-integral float with 3 decimals); no level's order moves with sigma
    rankings = set()
    for ratio, group in df.groupby("data.imbalance_ratio"):
        for sigma, shown in ((0.1, "0.100"), (0.5, "0.500"), (1.0, "1")):
            means = group.groupby("loss.name")[f"lt/balancedness@{sigma:g}"].mean()
            ranking = " > ".join(sorted(means.index, key=lambda loss: -means[loss]))
            assert f"| {ratio:g} | {shown} | {ranking} |" in text
            rankings.add((ratio, ranking))
    assert len(rankings) == len(RATIOS)
    assert "the sweep used 0.1" in text and "does **not** change with sigma." in text


def test_missing_or_empty_results_are_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "nowhere", tmp_path / "empty"):
        with pytest.raises(SystemExit) as exit_:
            main([str(target)])
        assert exit_.value.code == 2
        assert "no trial results under" in capsys.readouterr().err.strip().splitlines()[-1]


def test_ols_slope_and_t_quantile_match_hand_computed_values():
    from analysis.tables import ols_slope, t_quantile
    # x = 0, 1, 2; y = 0, 1, 3: slope 3/2, residuals 1/6, -1/3, 1/6, se = sqrt((1/6) / 1 / 2)
    slope, se = ols_slope(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 3.0]))
    assert slope == pytest.approx(1.5) and se == pytest.approx(math.sqrt(1 / 12))
    # one degree of freedom is the Cauchy distribution: quantile q is tan(pi (q - 1/2))
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475))


def test_a_half_written_results_file_is_reported_never_read(sweeps, tmp_path, capsys):
    import shutil
    copy_ = tmp_path / "fig2"
    shutil.copytree(sweeps / "fig2", copy_)
    files = sorted((copy_ / "results" / "trials").glob("*.parquet"))
    whole = files[0].read_bytes()
    files[0].write_bytes(whole[: len(whole) // 2])          # a crash mid-write, without the rename
    with pytest.raises(ValueError, match=f"{files[0].name}: damaged results file"):
        load_results(copy_)
    with pytest.raises(SystemExit) as exit_:
        main([str(copy_)])
    assert exit_.value.code == 2 and "damaged results file" in capsys.readouterr().err
    # an atomic writer's leftover temporary file is not read, and it is reported
    files[0].write_bytes(whole)
    (files[0].parent / ".tmp-abc.parquet").write_bytes(whole[:100])
    with pytest.warns(UserWarning, match="1 unfinished write"):
        df = load_results(copy_)
    assert len(df) == len(files)
