"""Results files are checked from their footer before anything is read: the issue's
reproductions (a 26 KB file declaring a 50-million-element list, a 351 KB file of a
million rows, wrong types) are refused fast, in little memory, naming the file."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.checks import HISTORY, MAX_CLASSES, SELECTION, TRIALS
from analysis.report import main
from analysis.results import DamagedResults, load_history, load_results
from study.bench_results import history_table, trial_table
from trainables import names

ROOT = Path(__file__).resolve().parents[2]
PER_CLASS = names.probe_metric(names.LT, names.PER_CLASS)
TOP1 = names.probe_metric(names.LT, names.TOP1)


def _sweep(root: Path, n: int = 6) -> Path:
    """A sweep of n synthetic trials (study.bench_results), one file per trial, with history."""
    table, sweep = trial_table(n), root / "sweep"
    for folder in ("trials", "history"):
        (sweep / "results" / folder).mkdir(parents=True)
    for i, trial_id in enumerate(table["trial_id"].to_pylist()):
        pq.write_table(table.slice(i, 1), sweep / "results" / "trials" / f"{trial_id}.parquet")
        pq.write_table(history_table([trial_id]), sweep / "results" / "history" / f"{trial_id}.parquet")
    return sweep


def _replace(table: pa.Table, name: str, array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, array)


def _measured_load(path: Path, what: str = "load_results") -> dict:
    """Load in a fresh interpreter: seconds, peak-RSS growth over the imports (VmHWM: the
    process's own peak, not pytest's), the error."""
    code = ("import json, sys, time\n"
            "from analysis.results import DamagedResults, load_history, load_results\n"
            "from study.bench_results import peak_mib as rss\n"
            "before, start, error = rss(), time.perf_counter(), None\n"
            f"try:\n    {what}(sys.argv[1])\n"
            "except DamagedResults as e:\n    error = str(e)\n"
            "print(json.dumps({'seconds': time.perf_counter() - start, 'growth_mib': rss() - before, "
            "'error': error}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_small_file_declaring_a_50_million_element_list_is_refused_fast_in_little_memory(tmp_path):
    sweep = _sweep(tmp_path)
    victim = sweep / "results" / "trials" / "t000003.parquet"
    # written in a child process: the list takes 400 MB to build, and its file is a few KB
    code = ("import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq\n"
            "t = pq.read_table(sys.argv[1]); n = 50_000_000\n"
            "big = pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), pa.array(np.zeros(n)))\n"
            f"t = t.set_column(t.schema.get_field_index({PER_CLASS!r}), {PER_CLASS!r}, big)\n"
            "pq.write_table(t, sys.argv[1], compression='zstd')\n")
    subprocess.run([sys.executable, "-c", code, str(victim)], check=True)
    assert victim.stat().st_size < 200_000
    result = _measured_load(sweep)
    assert result["error"].startswith(f"{victim}: damaged results file")
    assert "50,000,000 values" in result["error"] and f"{MAX_CLASSES:,} classes" in result["error"]
    assert result["seconds"] < 5 and result["growth_mib"] < 100        # reading it took 4 GB


def test_a_small_file_of_a_million_rows_is_refused_fast_in_little_memory(tmp_path):
    sweep = _sweep(tmp_path)
    victim = sweep / "results" / "trials" / "t000002.parquet"
    n = 1_000_000
    pq.write_table(pa.table({"trial_id": pa.array(["x"] * n), "sweep": pa.array(["s"] * n),
                             names.STATUS: pa.array(["ok"] * n)}), victim)
    assert victim.stat().st_size < 1_000_000
    result = _measured_load(sweep)
    assert result["error"].startswith(f"{victim}: damaged results file (1,000,000 rows; a trials file holds 1)")
    assert result["seconds"] < 5 and result["growth_mib"] < 100


def test_a_history_file_beyond_the_epoch_limit_is_refused(tmp_path):
    sweep = _sweep(tmp_path)
    victim = sweep / "results" / "history" / "t000001.parquet"
    epochs = HISTORY.max_rows + 1
    pq.write_table(pa.table({"trial_id": pa.array(["t000001"] * epochs), names.EPOCH: np.arange(epochs)}), victim)
    result = _measured_load(sweep, "load_history")
    assert result["error"].startswith(f"{victim}: damaged results file ({epochs:,} rows")
    assert result["seconds"] < 5


@pytest.mark.parametrize("change, message", [
    (lambda t: _replace(t, TOP1, pa.array(["0.5"])), f"column {TOP1!r} is string, expected double"),
    (lambda t: t.drop_columns(["trial_id"]), "no column 'trial_id'"),
    (lambda t: _replace(t, PER_CLASS, pa.array([[0.5] * 99], pa.list_(pa.float64()))),
     f"column {PER_CLASS!r} is not num_classes long"),
    (lambda t: _replace(t, "trial_id", pa.array([None], pa.string())), "a row without trial_id"),
])
def test_a_row_of_the_wrong_schema_or_types_is_damaged_never_a_type_error(tmp_path, capsys, change, message):
    sweep = _sweep(tmp_path)
    victim = sweep / "results" / "trials" / "t000000.parquet"
    table = pq.read_table(victim)
    table = _replace(table, names.STATUS, pa.array(["ok"]))         # lists present: the length check applies
    pq.write_table(change(table), victim)
    with pytest.raises(DamagedResults) as error:
        load_results(sweep)
    assert str(error.value).startswith(f"{victim}: damaged results file") and message in str(error.value)
    with pytest.raises(SystemExit) as exit_:
        main([str(sweep), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and message in err[-1] and str(victim) in err[-1]


def test_the_known_column_types_are_the_writers_schemas():
    from study.records import HISTORY_SCHEMA, SELECTION_SCHEMA, results_schema
    for kind, schema in ((TRIALS, results_schema()), (HISTORY, HISTORY_SCHEMA), (SELECTION, SELECTION_SCHEMA)):
        assert set(kind.types) <= set(schema.names), kind.folder
        assert all(schema.field(n).type.equals(t) for n, t in kind.types.items()), kind.folder
        assert set(kind.required) <= set(kind.types)


def test_well_formed_files_load_with_a_projection(tmp_path):
    sweep = _sweep(tmp_path)
    df = load_results(sweep, columns=["trial_id", TOP1, PER_CLASS, "no.such.column"])
    assert list(df.columns) == ["trial_id", TOP1, PER_CLASS, "no.such.column"]
    whole = load_results(sweep)
    assert df["trial_id"].tolist() == whole["trial_id"].tolist() == [f"t{i:06d}" for i in range(6)]
    assert df[TOP1].tolist() == whole[TOP1].tolist() and df["no.such.column"].isna().all()
    history = load_history(sweep)
    assert len(history) == 6 * 20 and history.groupby("trial_id")[names.EPOCH].apply(list).map(
        lambda e: e == list(range(1, 21))).all()
