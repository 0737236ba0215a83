"""The report on a small result set written through the sweep's own Parquet writer."""

import copy
import math

import numpy as np
import pytest

from analysis.report import main, write_report
from analysis.results import load_results
from analysis.tables import add_derived, level_table, sigma_ranking, slope_table
from study.parquet_sink import ParquetSink
from trainables.config import SMOKE, TrialConfig
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
    df = load_results([sweeps / "fig2", sweeps / "kpcl"])
    assert len(df) == 18 and set(df["sweep"]) == {"fig2", "kpcl"}
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
            assert row[f"lt/balancedness@{sigma:g}"] == balancedness(list(row["lt/per_class_acc"]), sigma)
        assert row["lt/balancedness@0.1"] == pytest.approx(row["lt/balancedness"])
    table, changed = sigma_ranking(df, [0.1, 1.0])
    assert len(table) == 2 * len(RATIOS) and isinstance(changed, bool)


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
    df = add_derived(load_results([sweeps / "fig2", sweeps / "kpcl"]))
    for (loss, ratio), group in df.groupby(["loss.name", "data.imbalance_ratio"]):
        top1, pv = group["lt/top1"].mean(), group["lt/balancedness"].mean()
        assert f"| {loss} | {ratio:g} | 2 | {top1:.3f} |" in text
        assert f"{pv:.3f}" in text
    assert "Sweeps: fig2, kpcl." in text


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
