"""The sweep's own record of its trials: what `--resume` rebuilds the search from.

    <sweep>/journal.jsonl    one JSON line per trial the searcher handed to Tune:
      {"n": 3, "trial_id": "3f2a1_00003", "slot": 1, "config": {...},
       "optuna_trial": 1, "objectives": [...], "params": {...}, "distributions": {...}}

A confirmation trial (study.confirm) adds "confirm_of" and "member": the search trial it
re-runs, by trial id and by n.
`n` counts the sweep's trials in the order they were suggested; `slot` is the
imbalance level x cell the trial belongs to (study.searcher); `optuna_trial`,
`params` and `distributions` are the Optuna trial's number in the slot's study
and its parameters, `objectives` what the study maximises (absent for a grid). A line is written and
fsynced in the searcher's `suggest`, before Tune starts the trial, so every row
under results/ belongs to a line. A trial that a resumed sweep continues gets a
second line with the same `n` and its new trial id.

--resume reads this file, sweep.json, the Parquet rows and weights-only
checkpoints, all as data. It never reads what Ray pickles into the sweep folder
(tuner.pkl, experiment_state-*.json, search_gen_state-*.json): those would run
code that anyone who can write to a shared storage folder put there.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from study.storage import is_remote, join, listing, open_fs, publish
from trainables import names

FILE = "journal.jsonl"


class Damaged(ValueError):
    """A journal or results row that --resume cannot read (the message names the file)."""


@dataclass
class Entry:
    """One trial of the sweep (its journal lines for one `n`)."""
    n: int
    slot: int
    config: dict
    trial_ids: list[str]                  # the Tune trials that ran it, oldest first
    params: dict = field(default_factory=dict)
    distributions: dict = field(default_factory=dict)
    optuna_trial: int | None = None       # its trial's number in its slot's Optuna study (newest line)
    confirm_of: str | None = None         # a confirmation trial: the search trial it re-runs
    member: int | None = None             # ... and that trial's journal n


@dataclass
class Resumed:
    """What a resumed search starts from.

    done: n -> the finished trial's objective values (None: error, stopped or diverged).
    pending: the trials that started and have no row, each with the folder of its
        newest checkpoint (None: it had not finished an epoch); they run again first.
    stopped: the n of the trials a scheduler stopped early (their rows hold the
        metrics of the epoch they stopped at, which are no final values).
    """
    entries: list[Entry]
    done: dict[int, list[float] | None]
    pending: list[tuple[Entry, str | None]]
    stopped: set[int] = field(default_factory=set)
    rows: dict[int, str] = field(default_factory=dict)     # n -> the trial id whose row it is

    def part(self, confirmations: bool) -> Resumed:
        """The search's trials (confirmations=False) or the confirmation trials' alone."""
        keep = {e.n for e in self.entries if (e.confirm_of is not None) == confirmations}
        return Resumed([e for e in self.entries if e.n in keep], {n: v for n, v in self.done.items() if n in keep},
                       [p for p in self.pending if p[0].n in keep], self.stopped & keep,
                       {n: t for n, t in self.rows.items() if n in keep})


def append(path: Path, record: dict) -> None:
    """One line, flushed to disk before the trial can start. A last line cut short by
    a crash is cut off first, so that it never glues onto this one."""
    _drop_torn_tail(path)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    publish(path)                          # a sweep in a bucket: the whole file, again


def _drop_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def read(path: Path) -> list[Entry]:
    """The journal's trials by `n`. A last line cut short by a crash is ignored (its
    trial never started); a bad line anywhere else is a damaged journal."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    entries: dict[int, Entry] = {}
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            n, trial_id = int(record["n"]), str(record["trial_id"])
            number = record.get("optuna_trial")
            entry = Entry(n, int(record["slot"]), dict(record["config"]), [trial_id],
                          dict(record.get("params", {})), dict(record.get("distributions", {})),
                          None if number is None else int(number),
                          None if record.get("confirm_of") is None else str(record["confirm_of"]),
                          None if record.get("member") is None else int(record["member"]))
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:
                break
            raise Damaged(f"{path}: line {i + 1} is not a journal record; the sweep cannot be resumed "
                          "from a damaged journal") from None
        if n in entries:
            entries[n].trial_ids.append(trial_id)
            entries[n].optuna_trial = entry.optuna_trial
        else:
            entries[n] = entry
    return [entries[n] for n in sorted(entries)]


def started(path: Path) -> bool:
    """Whether any trial of the sweep was handed to Tune."""
    return bool(read(path))


def _objective_values(row_file: Path, objectives: list[str]) -> tuple[str, list[float] | None]:
    """A row's status, and its objective values for Optuna: None unless it finished ok
    with all of them (a stopped trial's values are those of an early epoch)."""
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(row_file, columns=[names.STATUS, *objectives])
    except Exception as e:                     # pyarrow raises several kinds
        raise Damaged(f"{row_file}: not a readable results row ({e}); move it away to rerun its "
                         "trial") from None
    row = table.to_pylist()[0] if table.num_rows == 1 else None
    if row is None:
        raise Damaged(f"{row_file}: holds {table.num_rows} rows, a trial's file holds one")
    values = [row[m] for m in objectives]
    if row[names.STATUS] != "ok" or any(v is None or not math.isfinite(v) for v in values):
        return row[names.STATUS], None
    return row[names.STATUS], [float(v) for v in values]


def _checkpoint_folders(trials_at: str, trial_id: str) -> list[str]:
    """A trial's checkpoint folders that hold a state file, newest first (local or in a bucket)."""
    from trainables.tune_adapter import STATE_FILE
    if not is_remote(trials_at):
        folders = (Path(trials_at) / f"trial_{trial_id}").glob("checkpoint_*")
        return sorted((str(f) for f in folders if (f / STATE_FILE).is_file()), reverse=True)
    filesystem, root = open_fs(trials_at)
    files = listing(filesystem, f"{root}/trial_{trial_id}")
    found = {f.path.rsplit("/", 2)[1] for f in files if f.path.endswith(f"/{STATE_FILE}")}
    return [join(trials_at, f"trial_{trial_id}", c) for c in sorted(found, reverse=True)
            if c.startswith("checkpoint_")]


def newest_checkpoint(trials_at: str | Path, trial_ids: list[str]) -> str | None:
    """The newest checkpoint folder among the trials that ran one journal entry whose
    state loads (weights only): one cut short by a crash while Ray copied it is skipped
    for the one before it. `trials_at`: the folder (or bucket URI) of the trial folders."""
    from trainables.tune_adapter import load_state
    for trial_id in reversed(trial_ids):
        for folder in _checkpoint_folders(str(trials_at), trial_id):
            try:
                load_state(folder)
            except Exception:                  # torch raises several kinds on a torn file
                continue
            return folder
    return None


def resume_state(sweep_dir: Path, objectives: list[str], trials_at: str | None = None) -> Resumed:
    """Rebuild a sweep's progress from its journal, rows and checkpoints (the trial
    folders are in `trials_at`, by default the sweep folder)."""
    trials = sweep_dir / "results" / "trials"
    entries, done, pending, stopped, rows = read(sweep_dir / FILE), {}, [], set(), {}
    for entry in entries:
        row = next((trials / f"{t}.parquet" for t in reversed(entry.trial_ids)
                    if (trials / f"{t}.parquet").exists()), None)
        if row is None:
            pending.append((entry, newest_checkpoint(trials_at or sweep_dir, entry.trial_ids)))
        else:
            status, done[entry.n] = _objective_values(row, objectives)
            rows[entry.n] = row.stem
            if status == "stopped":
                stopped.add(entry.n)
    return Resumed(entries, done, pending, stopped, rows)
