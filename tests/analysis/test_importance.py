"""Hyperparameter importance per level: Optuna's fANOVA over hand-made trials whose
objectives each depend on one knob only, and the refusal to print noise."""

import json

import numpy as np
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution, IntDistribution, distribution_to_json

from analysis.importance import MIN_PER_KNOB, importance_table, journal_params, report_section
from analysis.markdown import markdown_table

OBJECTIVES = ["lt/top1", "lt/balancedness"]
DISTRIBUTIONS = {"loss.k": distribution_to_json(IntDistribution(1, 32, log=True)),
                 "loss.temperature": distribution_to_json(FloatDistribution(0.05, 0.5, log=True))}


def _sweep(folder, trials_per_level: dict[float, int], seed: int = 0):
    """A journal and rows: top-1 rises with log k alone, p(V) falls with the temperature alone."""
    rng, lines, rows = np.random.default_rng(seed), [], []
    for ratio, n in trials_per_level.items():
        for i in range(n):
            k, t = int(rng.integers(1, 33)), float(np.exp(rng.uniform(np.log(0.05), np.log(0.5))))
            trial_id = f"r{ratio:g}-{i}"
            lines.append(json.dumps({"n": len(lines), "trial_id": trial_id, "slot": 0, "objectives": OBJECTIVES,
                                     "params": {"loss.k": k, "loss.temperature": t},
                                     "distributions": DISTRIBUTIONS, "config": {}}))
            rows.append({"trial_id": trial_id, "status": "ok", "loss.name": "kcl", "data.imbalance_ratio": ratio,
                         "lt/top1": 0.3 + 0.1 * np.log(k), "lt/balancedness": 0.9 - t})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "journal.jsonl").write_text("\n".join(lines) + "\n" + '{"n": 99, "trial_id": "cut sh')
    return pd.DataFrame(rows)


def test_each_objective_is_explained_by_the_knob_it_depends_on(tmp_path):
    rows = _sweep(tmp_path, {10.0: 24, 100.0: 4})
    searched = journal_params([tmp_path])
    assert len(searched) == 28                      # the torn last line is skipped
    table, notes = importance_table(rows, searched)
    got = table.set_index(["ratio", "objective", "knob"])["importance"].sort_index()
    assert got[("10", "lt/top1", "loss.k")] > 0.9 and got[("10", "lt/balancedness", "loss.temperature")] > 0.9
    for objective in OBJECTIVES:                    # normalised: the knobs' shares sum to 1
        assert got.loc[("10", objective)].sum() == pytest.approx(1.0)
    assert set(table["trials"]) == {24}
    # 4 trials over 2 knobs: below 5 per knob, so no numbers, and a sentence says why
    assert notes == [f"kcl at ratio 100: 4 completed trials; an importance over 2 knobs needs at least "
                     f"{2 * MIN_PER_KNOB} ({MIN_PER_KNOB} per knob), so none is shown (more trials: --num-samples)"]
    again, _ = importance_table(rows, journal_params([tmp_path]))
    pd.testing.assert_frame_equal(table, again)     # seeded: the same numbers every time


def test_the_report_section_has_the_table_the_figure_and_the_notes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = _sweep(tmp_path / "s", {10.0: 10, 100.0: 3})
    (tmp_path / "s" / "results" / "trials").mkdir(parents=True)
    for row in rows.to_dict("records"):
        pq.write_table(pa.Table.from_pylist([{**row, "sweep": "s"}]),
                       tmp_path / "s" / "results" / "trials" / f"{row['trial_id']}.parquet")
    parts = report_section([tmp_path / "s"], tmp_path, markdown_table)
    assert parts[0] == "## Which knob mattered (hyperparameter importance)"
    assert parts[2].startswith("| loss | ratio | objective | trials | loss.k | loss.temperature |")
    assert parts[3] == "![importance](importance.png)" and (tmp_path / "importance.png").stat().st_size > 0
    assert parts[4].startswith("- kcl at ratio 100: 3 completed trials")
    assert report_section([tmp_path / "nothing"], tmp_path, markdown_table) == []     # a grid: no journal params
