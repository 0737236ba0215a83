"""A sweep that was copied or moved resumes where it now is.

Everything the harness itself writes is found relative to the sweep folder, or
from the --storage the resume is given: sweep.json keeps the storage it was
created in only to notice a move. One thing holds absolute paths it does not
choose: a local MLflow store records its experiments' and runs' artifact
locations (file:///STORAGE/mlartifacts/...). After `cp -a S0 S1`, a resume in S1
rewrites those of S1's own store that point into S0, so that the report lands in
S1 and S0 is never touched.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from study.plan import Refused

COLUMNS = ("artifact_location", "artifact_uri")


def _columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """(table, column) of every artifact path column the store's schema has."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return [(t, c[1]) for t in tables for c in db.execute(f'PRAGMA table_info("{t}")') if c[1] in COLUMNS]


def rebase_store(db_file: Path, old: Path, new: Path) -> int:
    """Rewrite artifact paths under `old` to the same paths under `new`, in one
    transaction; returns how many values changed."""
    prefixes = [(old.as_uri() + "/", new.as_uri() + "/"), (f"{old}/", f"{new}/")]
    changed = 0
    with sqlite3.connect(db_file, timeout=30) as db:        # commits on success
        for table, column in _columns(db):
            for before, after in prefixes:
                changed += db.execute(
                    f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                    f'WHERE substr("{column}", 1, ?) = ?',
                    (after, len(before) + 1, len(before), before)).rowcount
    db.close()
    return changed


def follow_move(sweep_dir: Path, storage: Path, mlflow_uri: str | None) -> None:
    """If the sweep was created under another storage folder, point the local MLflow
    store at this one (nothing to do for a tracking server) and record the new place.

    When only the sweep folder moved (not the store with it), this store never held its
    parent run: its MLflow ids are set aside, the resume opens a new parent run, and the
    runs are filled in from the rows at the end."""
    from study.storage import is_remote
    plan_file = sweep_dir / "sweep.json"
    saved = json.loads(plan_file.read_text())
    if is_remote(saved["storage"]):              # copied down from a bucket: no store came with it
        if mlflow_uri is None:
            forget_foreign_ids(sweep_dir, storage / "mlflow.db")
        return _record_storage(plan_file, saved, storage)
    old = Path(saved["storage"])
    if old == storage:
        return
    db_file = storage / "mlflow.db"
    if mlflow_uri is None:
        try:
            if db_file.exists():
                changed = rebase_store(db_file, old, storage)
                print(f"{sweep_dir.name} was created in {old}: {changed} artifact path(s) of {db_file} "
                      f"now point into {storage}")
            forget_foreign_ids(sweep_dir, db_file)
        except sqlite3.Error as e:
            raise Refused(f"{db_file}: cannot follow the sweep's move ({e}); is the copy writable?") from None
    _record_storage(plan_file, saved, storage)


def _record_storage(plan_file: Path, saved: dict, storage: Path) -> None:
    tmp = plan_file.with_name(".sweep.json.tmp")
    tmp.write_text(json.dumps({**saved, "storage": str(storage)}, indent=2))
    os.replace(tmp, plan_file)


def forget_foreign_ids(sweep_dir: Path, db_file: Path) -> None:
    ids = sweep_dir / "mlflow.json"
    if not ids.exists():
        return
    parent = json.loads(ids.read_text()).get("parent_run_id")
    found = False
    if db_file.exists():
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30) as db:
            found = db.execute("SELECT 1 FROM runs WHERE run_uuid = ?", (parent,)).fetchone() is not None
        db.close()
    if not found:
        os.replace(ids, ids.with_name("mlflow.json.moved"))
        print(f"{db_file} does not hold the sweep's MLflow runs (only the sweep folder moved): a new parent "
              "run is opened, and the runs are filled in from the rows")
