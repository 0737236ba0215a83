"""Reading sweep results: the Parquet files only, never Ray's internal files,
so a result set copied from a cluster can be analysed on a laptop.

Every file is checked from its footer before its values are read (analysis.checks),
and rows come from the compacted file where it is current (analysis.compaction), so a
hostile or damaged file is refused in milliseconds and ten thousand trials load in
seconds (docs/performance.md, "Results at scale").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa

from analysis.bucket import is_remote, local_copy
from analysis.checks import HISTORY, KINDS, SELECTION, TRIALS, DamagedResults, Kind
from analysis.compaction import STAMP, compact_kind, concat, load_kind, read_file, read_journal

__all__ = ["DamagedResults", "compact", "load_history", "load_results", "load_selection_rows", "read_parquet"]


def results_dir(path: Path) -> Path | None:
    """The results folder of a sweep folder (or the results folder itself): the one
    holding trials/ or trials.parquet; None if there is none."""
    for candidate in (path / "results", path):
        if (candidate / TRIALS.folder).is_dir() or (candidate / f"{TRIALS.folder}.parquet").is_file():
            return candidate
    return None


def _warn_unfinished(folder: Path) -> None:
    unfinished = sorted(f.name for f in folder.glob(".*.parquet"))
    if unfinished:
        warnings.warn(f"{folder}: {len(unfinished)} unfinished write(s) left by a crash, not read "
                      f"({', '.join(unfinished[:3])}); `python -m study.sweep STUDY --resume NAME` "
                      "rewrites their trials' rows", stacklevel=4)


def _load(path: Path, kind: Kind, columns) -> pa.Table | None:
    """One sweep's rows of one kind; a bare trials folder (path/*.parquet) is read as the journal."""
    results = results_dir(path)
    if results is None and kind is TRIALS and path.is_dir() and any(path.glob("[!.]*.parquet")):
        _warn_unfinished(path)
        parts = read_journal(sorted(f for f in path.glob("[!.]*.parquet")), kind, columns)
        return concat(parts) if parts else None
    if results is None:
        return None
    if (results / kind.folder).is_dir():
        _warn_unfinished(results / kind.folder)
    return load_kind(results, kind, columns)


def _frame(tables: list[pa.Table], columns) -> pd.DataFrame:
    """The tables as one DataFrame: STAMP dropped, requested columns absent everywhere null."""
    table = concat([(Path(), t) for t in tables]) if len(tables) > 1 else tables[0]
    table = table.drop_columns([c for c in STAMP if c in table.column_names])
    if columns is not None:
        n = table.num_rows
        table = pa.table({c: table.column(c) if c in table.column_names else pa.nulls(n) for c in columns})
    return table.to_pandas(split_blocks=True, self_destruct=True)


def _paths(paths) -> list[Path]:
    """Local folders; a sweep in a bucket (s3://BUCKET/PREFIX/NAME) is copied first (its results only)."""
    return [local_copy(str(p)) if is_remote(p) else Path(p)
            for p in ([paths] if isinstance(paths, (str, Path)) else paths)]


def load_results(paths: str | Path | Iterable[str | Path], columns: Iterable[str] | None = None) -> pd.DataFrame:
    """One DataFrame of every trial in one or several sweeps (one row per trial).

    Columns follow study.records.results_schema: the dotted config keys,
    "<probe>/<metric>" scalars, "<probe>/per_class_acc" and class_counts lists,
    status, seed, provenance, and `sweep`. `columns` reads only those (a column no
    file has comes back all null), which is what makes a large sweep cheap to load.
    Raises DamagedResults naming a file that is cut short, of the wrong schema, or
    beyond the limits of analysis.checks; FileNotFoundError where there are no rows.
    """
    columns = list(columns) if columns is not None else None
    tables = []
    for path in _paths(paths):
        table = _load(path, TRIALS, columns)
        if table is None:
            raise FileNotFoundError(f"no trial results under {path} (expected results/trials/*.parquet)")
        tables.append(table)
    return _frame(tables, columns)


def load_history(path: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-epoch metrics of every trial of one sweep (trial_id, epoch, loss, knn_acc, ...);
    an empty frame if the sweep has none."""
    path, columns = _paths(path)[0], (list(columns) if columns is not None else None)
    results = results_dir(path) or path
    table = load_kind(results, HISTORY, columns) if results.is_dir() else None
    return _frame([table], columns) if table is not None else pd.DataFrame()


def load_selection_rows(paths, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """The select study's rows (one per trial x strategy x budget) of one or several sweeps;
    an empty frame if none has any."""
    columns = list(columns) if columns is not None else None
    tables = [t for p in _paths(paths) for t in [_load(p, SELECTION, columns)] if t is not None]
    return _frame(tables, columns) if tables else pd.DataFrame()


def compact(sweep_dir: str | Path) -> dict[str, int]:
    """Write each kind's rows (trials, history, selection) into one file per sweep,
    <results>/trials.parquet, history.parquet, selection.parquet, keeping the per-trial
    files as the journal (analysis.compaction); return the rows of each file written.

    Safe to call at any time, also while a sweep writes: the loader uses a compacted
    row only while its journal file is unchanged. Raises DamagedResults (and leaves the
    previous compaction in place) if a journal file is damaged."""
    results = results_dir(Path(sweep_dir))
    if results is None:
        raise FileNotFoundError(f"no trial results under {sweep_dir} (expected results/trials/*.parquet)")
    return {name: compact_kind(results, kind) for name, kind in KINDS.items() if (results / name).is_dir()}


def read_parquet(file: str | Path, kind: Kind | None = None) -> pd.DataFrame:
    """One results file, checked as its folder's kind (trials, history, selection), or
    DamagedResults naming it: never a partial read."""
    file = Path(file)
    kind = kind or KINDS.get(file.parent.name, TRIALS)
    return read_file(file, kind).to_pandas()
