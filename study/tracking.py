"""The MLflow store seen from outside MLflow: is the URI well formed, is the store
reachable and whole, and the tools that keep the driver from waiting on it unboundedly.

Everything here is checked in `study.sweep.validate`, before Ray starts, with the
standard library only (importing MLflow takes seconds): a bad --mlflow-uri, a
server that is down or silent, or a damaged sqlite store is bad input (exit 2, one
line with what to do), never a traceback minutes into a sweep. The lock
serialises the creation of a sqlite store by concurrent sweeps (MLflow's schema
migration is not safe against itself), and `Writer` and `bounded` keep MLflow's
own waits out of Tune's callbacks and out of the reach of Ctrl-C.
"""

from __future__ import annotations

import fcntl
import queue
import re
import socket
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

PROBE_S = 5.0                                   # how long validation waits for a server's answer
SQL_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative paths from the current folder), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).resolve()


def check_uri(uri: str, flag: str = "--mlflow-uri") -> str:
    """The store's kind ("http", "sqlite" or "sql"), or ValueError naming what is wrong."""
    def bad(why: str) -> ValueError:
        return ValueError(f"{flag} {uri}: {why}")
    parts, scheme = urlsplit(uri), uri.partition(":")[0].split("+")[0].lower()
    if scheme in ("http", "https"):
        try:
            port = parts.port                   # raises on a port that is not a number
        except ValueError:
            raise bad("the port is not a number") from None
        if not parts.hostname or not uri.lower().startswith(f"{scheme}://") or port == 0:
            raise bad(f"expected {scheme}://HOST[:PORT]")
        return "http"
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):].split("?", 1)[0] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise bad("expected sqlite:///PATH (relative) or sqlite:////ABSOLUTE/PATH to a database file")
        return "sqlite"
    if scheme in SQL_PORTS:
        if not parts.hostname:
            raise bad(f"expected {scheme}://USER:PASSWORD@HOST[:PORT]/DATABASE")
        return "sql"
    if scheme == "file" or not re.fullmatch(r"[a-z][a-z0-9.-]*", scheme):
        # MLflow 3 refuses its file store ("maintenance mode"): it would fail at the first run
        raise bad("a file store (a plain path or file:) is no longer accepted by MLflow 3; "
                  "use sqlite:///PATH/mlflow.db or a tracking server's http:// URL")
    raise bad("expected http(s)://HOST[:PORT], sqlite:///PATH, or a postgresql/mysql/mssql URL")


def check_store(uri: str, timeout: float = PROBE_S) -> None:
    """ValueError (one line, with what to do) unless the store can be used now."""
    kind = check_uri(uri)
    if kind == "http":
        probe_server(uri, timeout)
    elif kind == "sqlite":
        check_sqlite(uri)
    else:
        check_reachable(uri, "--mlflow-uri", timeout)


def check_reachable(uri: str, flag: str, timeout: float = PROBE_S) -> None:
    """A SQL server's URI: is anything listening at its host and port?"""
    parts = urlsplit(uri)
    port = parts.port or SQL_PORTS[uri.partition(":")[0].split("+")[0].lower()]
    try:
        bounded(socket.create_connection, (parts.hostname, port), timeout, timeout=timeout + 1).close()
    except (OSError, TimeoutError) as e:
        raise ValueError(f"{flag}: cannot reach the database at {parts.hostname}:{port} "
                         f"({getattr(e, 'strerror', None) or e})") from None


def _tables_and_runs(path: Path, mode: str) -> tuple[set[str], int]:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode={mode}", uri=True, timeout=2)) as db:
        tables = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
        return tables, db.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0


def check_sqlite(uri: str) -> None:
    """A sqlite store that MLflow can open: absent (it is created), or a whole MLflow database."""
    path = sqlite_path(uri)
    if path.is_dir():
        raise ValueError(f"--mlflow-uri {uri}: {path} is a folder, not a database file")
    if not path.exists():
        return
    try:
        try:
            tables, runs = _tables_and_runs(path, "ro")
        except sqlite3.OperationalError as e:
            if "readonly" not in str(e):
                raise
            # a hot journal: a writer was killed mid-transaction (a SIGKILLed driver). Reading
            # means rolling it back, which sqlite does on a read-write open, as MLflow's would.
            tables, runs = _tables_and_runs(path, "rw")
    except sqlite3.OperationalError as e:
        if "locked" in str(e):                  # a sweep is writing to it: a busy store is a working one
            return
        raise ValueError(f"--mlflow-uri {uri}: cannot read {path} ({e})") from None
    except sqlite3.DatabaseError as e:
        raise ValueError(f"--mlflow-uri {uri}: {path} is not an MLflow store ({e}); "
                         "move it away or pass another --mlflow-uri") from None
    leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if leftovers:
        raise ValueError(f"--mlflow-uri {uri}: {path} was left half-created by an interrupted schema "
                         f"migration (table {leftovers[0]}); " + _repair_hint(uri, path, leftovers, runs))
    if tables and "experiments" not in tables:
        raise ValueError(f"--mlflow-uri {uri}: {path} is a sqlite database but not an MLflow store "
                         f"(no experiments table); pass another --mlflow-uri")


def _repair_hint(uri: str, path: Path, leftovers: list[str], runs: int) -> str:
    if not runs:
        return f"it holds no runs: delete it (rm {path}) and start the sweep again"
    drops = "; ".join(f"DROP TABLE {t}" for t in leftovers)
    return (f"it holds {runs} run(s): back it up, then run: sqlite3 {path} '{drops}' && "
            f"mlflow db upgrade {uri}")


def probe_server(uri: str, timeout: float = PROBE_S) -> None:
    """GET <uri>/health: any HTTP answer below 500 is a live server. Refused, silent
    (accepts, never answers) and unresolvable servers are ValueErrors within `timeout`
    seconds (plus one): the whole request runs in a thread, so even a name lookup,
    which has no timeout of its own, cannot hold the sweep."""
    def get() -> int:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as answer:
                return answer.status
        except urllib.error.HTTPError as e:
            return e.code
    try:
        status = bounded(get, timeout=timeout + 1)
    except (OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        if isinstance(e, TimeoutError) or isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = f"it did not answer within {timeout:g} s"
        raise ValueError(f"--mlflow-uri {uri}: no MLflow server answers there ({reason}); "
                         "start it (mlflow server), or fix the URI") from None
    if status >= 500:
        raise ValueError(f"--mlflow-uri {uri}: the server answered HTTP {status} to /health; see its log")


@contextmanager
def store_lock(uri: str, wait_s: float = 300.0):
    """An exclusive lock (flock on <db>.lock beside a sqlite database) for as long as
    the block runs; nothing for other stores. Polled, not blocking, so that a thread
    holding none keeps answering and gives up after `wait_s`."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path}.lock: another sweep held it for {wait_s:g} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def bounded(fn, *args, timeout: float):
    """fn(*args) in a daemon thread, waited for at most `timeout` s (TimeoutError after).

    The caller's wait can be interrupted (Ctrl-C), and a call that never returns is
    left behind in a thread that does not keep the process alive."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:              # handed to the caller, re-raised there
            box["error"] = e
    thread = threading.Thread(target=run, daemon=True, name=f"bounded-{getattr(fn, '__name__', 'call')}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


SETTLE_S = 35.0          # how long close() waits for an attempt under way (MLflow's timeout is 30 s)


class Writer:
    """Runs tasks in order in one daemon thread; a task that fails with a transient error
    is retried (backoff up to `max_backoff` s) until it succeeds, so that whoever submits
    never waits and the store catches up when it comes back. Order is kept: a trial's
    run is opened before its metrics are logged and ended after them."""

    def __init__(self, transient, max_backoff: float = 15.0):
        self.transient, self.max_backoff = transient, max_backoff
        self.failed = 0                          # tasks dropped on a permanent error
        self._queue: queue.Queue = queue.Queue()
        self._stop, self._wake = threading.Event(), threading.Event()
        self._down = False                       # said once per outage, on stderr
        self._closing = self._gave_up = False    # close(): a failure after it ends the wait
        self.busy = False                        # a task's attempt is under way
        self._thread = threading.Thread(target=self._loop, daemon=True, name="mlflow-writer")
        self._thread.start()

    def submit(self, fn, *args) -> None:
        self._queue.put((fn, args))

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def _loop(self) -> None:
        while True:
            fn, args = self._queue.get()
            self.busy = True
            try:
                self._run(fn, args)
            finally:
                self.busy = False
                self._queue.task_done()

    def _run(self, fn, args) -> None:
        delay = 0.5
        while not self._stop.is_set():
            closing = self._closing              # only an attempt begun after close() counts
            try:
                fn(*args)
                if self._down:
                    print("MLflow is reachable again; catching up", file=sys.stderr, flush=True)
                self._down = False
                return
            except Exception as e:
                if not self.transient(e):
                    self.failed += 1
                    print(f"MLflow refused a write ({str(e).splitlines()[0][:200]})", file=sys.stderr, flush=True)
                    return
                if not self._down:
                    print(f"MLflow unreachable ({str(e).splitlines()[0][:200]}); trials go on, their runs "
                          "are logged when it is back", file=sys.stderr, flush=True)
                self._down, self._gave_up = True, closing
                if self._wake.wait(delay):           # close() asks for one retry now
                    self._wake.clear()
                    delay = 0.5
                delay = min(delay * 2, self.max_backoff)

    def close(self, timeout: float) -> int:
        """Wait up to `timeout` s for the queue to drain, then stop; return the tasks left undone.
        A store that fails once more after this call is still away: no point waiting it out."""
        self._closing = True
        self._wake.set()                         # a task waiting out its backoff retries at once
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline and not self._gave_up:
            time.sleep(0.05)
        left = self.pending
        self._stop.set()
        # an attempt under way ends within MLflow's own request timeout; wait for it (bounded),
        # so that nothing written after this call races whoever fills the gaps in
        settle = time.monotonic() + SETTLE_S
        while self.busy and time.monotonic() < settle:
            time.sleep(0.05)
        return left
