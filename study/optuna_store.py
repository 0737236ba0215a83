"""Where a sweep's Optuna studies live: an Optuna RDB storage that optuna-dashboard opens.

    sqlite:///STORAGE/optuna.db          the default, beside the MLflow store (mlflow.db)
    --optuna-storage postgresql://...     a team's database server (or mysql://)

One study per slot (imbalance level x cell, study.searcher), named by the sweep and
the slot, e.g. `kpcl-20261204T131832Z:ratio=10` or `select-...:ratio=10,loss.name=ce`;
each carries its objectives' names and the user attributes study, sweep, git_commit.
The driver is the storage's only writer for its studies (the searcher runs there);
sweeps that share a storage folder share the database file, each with its own studies.

The journal stays the sweep's record (study.journal): a resumed search takes up the
studies it finds and tells them what the rows say; a sweep whose studies are not in the
storage (a copied sweep folder without its database) gets them rebuilt from the journal.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

from study.tracking import check_reachable, check_uri, sqlite_path, store_lock

SQLITE_WAIT_S = 60          # how long a write waits for another sweep's lock on a shared file
BUSY = "(locked by a sweep)"


def check_optuna_uri(uri: str) -> None:
    """ValueError (one line) unless `uri` is an RDB storage Optuna can use now."""
    flag = "--optuna-storage"
    if uri.partition(":")[0].split("+")[0].lower() not in ("sqlite", "postgresql", "mysql"):
        raise ValueError(f"{flag} {uri}: expected sqlite:///PATH (a file), or a postgresql:// or mysql:// URL")
    kind = check_uri(uri, flag)
    if kind == "sql":
        check_reachable(uri, flag)
        return
    path = sqlite_path(uri)
    if path.is_dir():
        raise ValueError(f"{flag} {uri}: {path} is a folder, not a database file")
    tables = _tables(uri) if path.exists() else set()
    if tables and not tables & {"studies", BUSY}:
        raise ValueError(f"{flag} {uri}: {path} is a sqlite database but not an Optuna storage "
                         "(no studies table); pass another --optuna-storage")


def _tables(uri: str) -> set[str]:
    """The database's tables; a file another sweep holds locked counts as a working storage."""
    path = sqlite_path(uri)
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            return {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.OperationalError as e:
        if "locked" in str(e):
            return {BUSY}
        raise ValueError(f"--optuna-storage {uri}: cannot read {path} ({e})") from None
    except sqlite3.DatabaseError as e:
        raise ValueError(f"--optuna-storage {uri}: {path} is not a readable sqlite database ({e})") from None


def trials_of_sweep(uri: str, sweep: str) -> dict[str, int]:
    """Study name -> trial count of the studies named `sweep:...` in a sqlite storage ({} for a
    server, or a file busy for seconds)."""
    path = sqlite_path(uri)
    if path is None or not path.exists() or "studies" not in _tables(uri):
        return {}
    prefix = f"{sweep}:"
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            rows = db.execute("select s.study_name, count(t.trial_id) from studies s left join trials t "
                              "on t.study_id = s.study_id where substr(s.study_name, 1, ?) = ? "
                              "group by s.study_name", (len(prefix), prefix)).fetchall()
    except sqlite3.OperationalError:           # busy: the searcher checks again once it opens them
        return {}
    return dict(rows)


def check_new_studies(uri: str, sweep: str) -> None:
    """A new sweep's studies must not exist with trials already (another sweep of that name).
    A database server's studies are checked once opened (study.searcher.LevelSearch._open),
    as are two sweeps of one name started at the same moment."""
    taken = {name: n for name, n in trials_of_sweep(uri, sweep).items() if n}
    if taken:
        name, n = next(iter(taken.items()))
        raise ValueError(f"--name {sweep}: the Optuna storage {uri} already holds study {name} with {n} "
                         f"trial(s); continue that sweep with --resume {sweep}, choose another --name, or "
                         f"remove its studies (optuna delete-study --storage {uri} --study-name '{name}')")


def open_storage(uri: str):
    """An Optuna RDBStorage. Its first open creates the tables; sweeps that start together
    into one new folder take turns (the same lock as the MLflow store's creation)."""
    import optuna
    engine = {"connect_args": {"timeout": SQLITE_WAIT_S}} if sqlite_path(uri) else {"pool_pre_ping": True}
    with store_lock(uri):
        return optuna.storages.RDBStorage(uri, engine_kwargs=engine)


def slot_name(sweep: str, level: float | None, cell: dict, ratio_range=None) -> str:
    """`sweep:ratio=10` (a level), `sweep:ratio=2-50` (--imbalance-range), then the cell's keys."""
    ratio = f"ratio={level:.12g}" if level is not None else "ratio={:.12g}-{:.12g}".format(*ratio_range)
    return ":".join([sweep, ",".join([ratio, *(f"{k}={v}" for k, v in cell.items())])])


def dashboard_command(uri: str) -> str:
    return f"optuna-dashboard {uri} --host 127.0.0.1 --port 8080"
