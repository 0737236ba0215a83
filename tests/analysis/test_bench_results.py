"""study.bench_results at a tiny size: every step runs in its own interpreter, on rows
that load back as the synthesised ones, and the ratio is printed."""

import json
import re

from analysis.results import load_results
from study.bench_results import STEPS, build_parser, main, synthesise
from trainables import names


def test_the_synthetic_rows_are_realistic_and_load(tmp_path):
    synthesise(tmp_path / "bench", 20)
    df = load_results(tmp_path / "bench")
    assert len(df) == 20 and set(df[names.STATUS]) <= {"ok", "stopped", "error"}
    acc = df[names.probe_metric(names.LT, names.PER_CLASS)]
    assert all(len(a) == 100 for a in acc)
    assert (df[names.probe_metric(names.LT, names.TOP1)] - acc.map(lambda a: a.mean())).abs().max() < 1e-12


def test_the_benchmark_runs_each_step_and_prints_the_ratio(tmp_path, capsys):
    assert main(["--rows", "20", "--dir", str(tmp_path), "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    for step in STEPS:
        assert re.search(rf"^{step} +[\d.]+ s +peak RSS +\d+ MiB", out, flags=re.M), step
    assert re.search(r"ratio load_trials / load_compacted: [\d.]+x", out)
    steps = json.loads((tmp_path / "b.json").read_text())["steps"]
    assert [s["step"] for s in steps] == list(STEPS)
    assert [s["rows"] for s in steps[:3]] == [20 + 20 * 20] * 3      # trials + 20 epochs each
    assert build_parser().parse_args(["--rows", "100000"]).rows == 100_000
