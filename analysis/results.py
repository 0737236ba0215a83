"""Reading sweep results: the Parquet files only, never Ray's internal files,
so a result set copied from a cluster can be analysed on a laptop."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd


class DamagedResults(ValueError):
    """A results file that is not a whole Parquet file (cut short by a crash or a copy)."""


def _trial_files(path: Path) -> list[Path]:
    """<sweep>/results/trials/*.parquet, given the sweep folder, its results folder,
    or the trials folder itself. Temporary files of an interrupted write (".name")
    are not read; they are reported."""
    for candidate in (path / "results" / "trials", path / "trials", path):
        if candidate.is_dir() and any(candidate.glob("[!.]*.parquet")):
            _warn_unfinished(candidate)
            return sorted(f for f in candidate.glob("*.parquet") if not f.name.startswith("."))
    raise FileNotFoundError(f"no trial results under {path} (expected results/trials/*.parquet)")


def _warn_unfinished(folder: Path) -> None:
    unfinished = sorted(f.name for f in folder.glob(".*.parquet"))
    if unfinished:
        warnings.warn(f"{folder}: {len(unfinished)} unfinished write(s) left by a crash, not read "
                      f"({', '.join(unfinished[:3])}); `python -m study.sweep STUDY --resume NAME` "
                      "rewrites their trials' rows", stacklevel=3)


def read_parquet(file: Path) -> pd.DataFrame:
    """One results file, or DamagedResults naming it: never a partial read."""
    import pyarrow as pa
    try:
        return pd.read_parquet(file)
    except (pa.ArrowException, OSError) as e:
        raise DamagedResults(f"{file}: damaged results file, probably half-written by a crash ({e}); "
                             "move it away and run the sweep with --resume to rewrite it") from None


def load_results(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One DataFrame of every trial in one or several sweeps (one row per trial).

    Columns follow study.records.results_schema: the dotted config keys,
    "<probe>/<metric>" scalars, "<probe>/per_class_acc" and class_counts lists,
    status, seed, provenance, and `sweep`.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [read_parquet(f) for p in paths for f in _trial_files(Path(p))]
    return pd.concat(frames, ignore_index=True)


def load_history(path: str | Path) -> pd.DataFrame:
    """Per-epoch metrics of every trial of one sweep (trial_id, epoch, loss, knn_acc, ...)."""
    path = Path(path)
    folder = next((f for f in (path / "results" / "history", path / "history") if f.is_dir()), None)
    files = sorted(folder.glob("[!.]*.parquet")) if folder else []    # not an interrupted write
    return pd.concat([read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
