"""The MLflow store before and around a sweep: bad URIs, damaged stores and servers that
are down or silent exit 2 in seconds with one line; sweeps that create one store at
once all succeed (real sqlite stores, real processes)."""

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from fixtures import free_port

import study.runner
from study.sweep import main
from study.tracking import check_store

BAD_URIS = [
    ("htp:/x", "expected http(s)://HOST[:PORT]"),
    ("http://", "expected http://HOST[:PORT]"),
    ("http://host:port-not-a-number", "the port is not a number"),
    ("sqlite:/x", "expected sqlite:///PATH"),
    ("file:///tmp/mlruns", "no longer accepted by MLflow 3"),
    ("runs/mlruns", "no longer accepted by MLflow 3"),
]


def _refused(argv, storage, capsys, monkeypatch) -> tuple[str, float]:
    """main(argv) must exit 2 before the sweep starts; (its last stderr line, seconds taken)."""
    def never(*args, **kwargs):
        raise AssertionError("the sweep started on a bad MLflow store")

    monkeypatch.setattr(study.runner, "run_sweep", never)
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main(["kpcl", "--smoke", "--storage", str(storage), *argv])
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1], time.monotonic() - start


@pytest.mark.parametrize("uri, words", BAD_URIS, ids=[u for u, _ in BAD_URIS])
def test_a_malformed_mlflow_uri_exits_2_with_one_line(uri, words, tmp_path, capsys, monkeypatch):
    line, _ = _refused(["--mlflow-uri", uri], tmp_path / "runs", capsys, monkeypatch)
    assert words in line and line.startswith("python -m study.sweep: error: --mlflow-uri")
    assert not (tmp_path / "runs").exists()


def test_a_relative_sqlite_path_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_store("sqlite:///runs/mlflow.db")              # absent: MLflow creates it


def test_a_closed_port_exits_2_in_seconds(tmp_path, capsys, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    line, seconds = _refused(["--mlflow-uri", uri], tmp_path / "runs", capsys, monkeypatch)
    assert "no MLflow server answers there" in line and "refused" in line.lower()
    assert seconds < 10


def test_a_silent_server_exits_2_in_seconds(tmp_path, capsys, monkeypatch):
    # accepts connections and never answers: MLflow itself would wait 120 s a request, 7 times
    server, held = socket.create_server(("127.0.0.1", 0)), []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        line, seconds = _refused(["--mlflow-uri", uri], tmp_path / "runs", capsys, monkeypatch)
    finally:
        server.close()
    assert "did not answer within 5 s" in line
    assert seconds < 10 and held                          # it did connect: the probe's timeout ended it


def test_a_file_that_is_no_database_exits_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "mlflow.db").write_text("not sqlite at all, " * 100)
    line, _ = _refused(["--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], tmp_path / "runs", capsys,
                       monkeypatch)
    assert "is not an MLflow store" in line and "move it away" in line


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A real MLflow sqlite store holding one experiment and one run (created once)."""
    from study.mlflow_store import start_parent_run
    folder = tmp_path_factory.mktemp("store")
    start_parent_run(f"sqlite:///{folder / 'mlflow.db'}", "kpcl", "s0", {}, folder / "artifacts")
    return folder / "mlflow.db"


def _copy_with_leftover(store: Path, folder: Path, keep_runs: bool) -> Path:
    """The store as an interrupted migration leaves it: an _alembic_tmp_ table beside the real one."""
    db = folder / "mlflow.db"
    db.write_bytes(store.read_bytes())
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
        if not keep_runs:
            for table in ("latest_metrics", "metrics", "params", "tags", "runs"):
                con.execute(f"DELETE FROM {table}")
    return db


def test_a_half_migrated_store_with_runs_exits_2_with_a_repair_that_works(store, tmp_path, capsys, monkeypatch):
    db = _copy_with_leftover(store, tmp_path, keep_runs=True)
    uri = f"sqlite:///{db}"
    line, _ = _refused(["--mlflow-uri", uri], tmp_path / "runs", capsys, monkeypatch)
    assert "_alembic_tmp_experiments" in line and "holds 1 run(s)" in line
    assert f"sqlite3 {db} 'DROP TABLE _alembic_tmp_experiments' && mlflow db upgrade {uri}" in line
    with sqlite3.connect(db) as con:                     # the repair, as the line says
        con.execute("DROP TABLE _alembic_tmp_experiments")
    check_store(uri)
    from study.mlflow_store import start_parent_run
    assert start_parent_run(uri, "kpcl", "s1", {}, tmp_path)[0] == "1"      # the experiment it had


def test_a_half_migrated_store_without_runs_says_delete_it(store, tmp_path, capsys, monkeypatch):
    db = _copy_with_leftover(store, tmp_path, keep_runs=False)
    line, _ = _refused(["--mlflow-uri", f"sqlite:///{db}"], tmp_path / "runs", capsys, monkeypatch)
    assert f"it holds no runs: delete it (rm {db})" in line


RACER = """
import os, sys, time
from pathlib import Path
from study.mlflow_store import start_parent_run     # MLflow imported before the start signal
uri, go, name = sys.argv[1:]
Path(go + "." + name).touch()                       # ready
while not os.path.exists(go):
    time.sleep(0.005)
print(*start_parent_run(uri, "kpcl", name, {}, Path(go).parent / "artifacts"))
"""


@pytest.mark.parametrize("sweeps", [4])                 # 2 is a subset of the race: suite time
def test_sweeps_started_at_once_into_a_new_folder_share_one_store(sweeps, tmp_path):
    # Unlocked, 4 such processes all crashed in MLflow's schema migration and left
    # _alembic_tmp_ tables that refused every later sweep.
    uri, go = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", RACER, uri, str(go), f"s{i}"], cwd=root, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(sweeps)]
    deadline = time.monotonic() + 120                    # each imports MLflow (seconds), then waits
    while len(list(tmp_path.glob("go.*"))) < sweeps and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * sweeps, [err[-500:] for _, err in outs]
    experiments = {out.split()[0] for out, _ in outs}
    assert experiments == {"1"}                          # one experiment (0 is MLflow's Default)
    with sqlite3.connect(tmp_path / "runs" / "mlflow.db") as con:
        names = sorted(n for (n,) in con.execute("SELECT name FROM runs"))
        leftovers = con.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp_%'").fetchall()
    assert names == [f"s{i}" for i in range(sweeps)] and leftovers == []
    check_store(uri)


def test_close_waits_for_a_write_under_way_so_that_nothing_writes_after_it():
    # A run created after reconcile filled the gaps would be a duplicate: close() lets the
    # attempt under way end (bounded by MLflow's own timeout) before it returns.
    import time

    from study.tracking import Writer
    written = []
    writer = Writer(lambda e: True)
    writer.submit(lambda: (time.sleep(1.0), written.append("run")))
    time.sleep(0.2)                                    # the attempt is under way
    assert writer.close(0) == 1 and written == ["run"] and not writer.busy


def test_a_store_left_with_a_hot_journal_by_a_killed_writer_is_accepted_and_rolled_back(tmp_path):
    # a writer SIGKILLed mid-transaction (as a killed driver's MLflow store can be) leaves a
    # hot journal; a read-only open cannot roll it back ("attempt to write a readonly database")
    db_path = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(db_path)) as db:
        db.execute("create table experiments (id)")          # the tables the check reads
        db.execute("create table runs (a, b)")
        db.execute("insert into runs values (1, 'kept')")
        db.commit()
    writer = ("import os, signal, sqlite3, sys\n"
              "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "db.execute('pragma cache_size=1'); db.execute('begin')\n"
              "for i in range(2000): db.execute('insert into runs values (?, ?)', (i, 'x' * 500))\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", writer, str(db_path)])
    assert (tmp_path / "mlflow.db-journal").exists()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        with closing(sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True)) as db:
            db.execute("select count(*) from runs").fetchone()
    check_store(f"sqlite:///{db_path}")
    with closing(sqlite3.connect(db_path)) as db:           # the interrupted rows are gone, the rest kept
        assert db.execute("select b from runs").fetchall() == [("kept",)]
