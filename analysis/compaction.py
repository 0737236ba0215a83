"""The per-trial files are a journal; <results>/<kind>.parquet is its compaction.

A sweep writes one small file per trial (crash-safe: each is written atomically and
a resumed sweep rewrites only its own trials' files), but opening ten thousand
Parquet files costs a footer each. `compact` copies every journal file's rows into
one file, and stamps each row with the journal file it came from: its name, size
and modification time (`STAMP` columns).

The rule the loader follows: the journal is the truth, the compacted file a cache.
A compacted row is used only while its journal file still exists with the same
size and mtime; every other journal file (new since the compaction, or rewritten)
is read itself, and a compacted row whose journal file is gone (moved to orphaned/)
is dropped. A results folder shipped without its journal folder reads the
compacted file alone.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.checks import DamagedResults, Kind, TRIALS, check_metadata, check_rows

STAMP = SOURCE, SIZE, MTIME = ("_journal_file", "_journal_size", "_journal_mtime_ns")
THREADS = min(8, os.cpu_count() or 1)          # more only contend for the GIL


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """The journal: file name -> (size, mtime in ns), temporary files (".name") left out."""
    out = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.endswith(".parquet") and not entry.name.startswith("."):
                st = entry.stat()
                out[entry.name] = (st.st_size, st.st_mtime_ns)
    return out


def _projection(columns, schema: pa.Schema, kind: Kind) -> list[str] | None:
    """The requested columns this file has, plus those the row checks and the merge need."""
    if columns is None:
        return None
    extra = (*kind.required, *(("num_classes",) if kind is TRIALS else ()), *STAMP)
    return [c for c in dict.fromkeys((*columns, *extra)) if c in schema.names]


def read_file(path: Path, kind: Kind, columns=None, compacted: bool = False) -> pa.Table:
    """One checked file: its footer first (check_metadata), then its values, then its rows."""
    try:
        pf = pq.ParquetFile(path)
        schema = check_metadata(path, pf.metadata, kind, compacted)
        table = pf.read(columns=_projection(columns, schema, kind), use_threads=compacted)
    except (pa.ArrowException, OSError) as e:
        raise DamagedResults(f"{path}: damaged results file, probably half-written by a crash ({e}); "
                             "move it away and run the sweep with --resume to rewrite it") from None
    check_rows(path, table, kind)
    return table


def _stamped(path: Path, kind: Kind, columns=None, tries: int = 3) -> pa.Table | None:
    """read_file with the STAMP of the very content read: the file is stat'ed before and
    after, and read again if it was replaced meanwhile (None if it keeps changing)."""
    for _ in range(tries):
        before = os.stat(path)
        table = read_file(path, kind, columns)
        after = os.stat(path)
        if (before.st_ino, before.st_size, before.st_mtime_ns) == (after.st_ino, after.st_size, after.st_mtime_ns):
            n = table.num_rows
            return table.drop_columns([c for c in STAMP if c in table.column_names]).append_column(
                SOURCE, pa.array([path.name] * n)).append_column(
                SIZE, pa.array([after.st_size] * n, pa.int64())).append_column(
                MTIME, pa.array([after.st_mtime_ns] * n, pa.int64()))
    return None


def read_journal(paths: list[Path], kind: Kind, columns=None, batch: int = 500) -> list[tuple[Path, pa.Table]]:
    """Journal files in parallel (the reads release the GIL), each stamped, in order: one
    table per `batch` files, its chunks combined, because ten thousand one-row tables
    hold a million small buffers (3.5 GB for 10,000 trials, against 0.3 GB combined)."""
    out = []
    with ThreadPoolExecutor(THREADS) as pool:
        for start in range(0, len(paths), batch):
            some = paths[start:start + batch]
            tables = pool.map(lambda p: _stamped(p, kind, columns), some)
            parts = [(p, t) for p, t in zip(some, tables) if t is not None]
            if parts:
                out.append((some[0], concat(parts).combine_chunks()))
    return out


def read_compacted(path: Path, kind: Kind, columns, journal: dict | None) -> pa.Table:
    """The compacted file's rows that are still current (the rule in the module's docstring)."""
    table = read_file(path, kind, columns, compacted=True)
    missing = [c for c in STAMP if c not in table.column_names]
    if missing:
        raise DamagedResults(f"{path}: damaged compacted file (no column {missing[0]!r}); delete it, "
                             "the per-trial files hold every row")
    if journal is None:
        return table
    stamps = zip(*(table.column(c).to_pylist() for c in STAMP))
    keep = [journal.get(name) == (size, mtime) for name, size, mtime in stamps]
    return table.filter(pa.array(keep, pa.bool_()))


def concat(parts: list[tuple[Path, pa.Table]]) -> pa.Table:
    """One table of the parts; columns one part lacks are null there. Parts that disagree
    on a column's type (only unknown columns can: known ones are checked) are damaged."""
    try:
        return pa.concat_tables([t for _, t in parts], promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        seen = {}
        for path, table in parts:
            for f in table.schema:
                first = seen.setdefault(f.name, (path, f.type))
                if not f.type.equals(first[1]) and not pa.types.is_null(f.type) and not pa.types.is_null(first[1]):
                    raise DamagedResults(f"{path}: damaged results file (column {f.name!r} is {f.type}, "
                                         f"but {first[1]} in {first[0]})") from None
        raise


def load_kind(results: Path, kind: Kind, columns=None) -> pa.Table | None:
    """Every current row of one kind under a results folder: the compacted file's current
    rows and the journal files it does not cover, in journal-file order; None if none."""
    folder, compacted = results / kind.folder, results / f"{kind.folder}.parquet"
    journal = listing(folder) if folder.is_dir() else None
    parts = []
    if compacted.is_file():
        try:
            parts = [(compacted, read_compacted(compacted, kind, columns, journal))]
        except DamagedResults as e:
            if journal is None:                       # nothing else holds these rows
                raise
            warnings.warn(f"{e}; reading the per-trial files instead (analysis.results.compact rebuilds it)",
                          stacklevel=4)
    covered = set(parts[0][1].column(SOURCE).to_pylist()) if parts else set()
    fresh = [folder / name for name in sorted(journal or {}) if name not in covered]
    parts += read_journal(fresh, kind, columns)
    if not parts:
        return None
    return concat(parts).sort_by(SOURCE)          # a stable sort: history keeps its epochs' order


def _footer(path: Path, kind: Kind) -> pa.Schema:
    try:
        return check_metadata(path, pq.read_metadata(path), kind)
    except (pa.ArrowException, OSError) as e:
        raise DamagedResults(f"{path}: damaged results file, probably half-written by a crash ({e})") from None


def _unified(parts: list[tuple[Path, pa.Schema]]) -> pa.Schema:
    """One schema for the compacted file: every column of every part, STAMP last."""
    distinct = {}
    for path, schema in parts:
        distinct.setdefault(schema.remove_metadata(), path)
    try:
        schema = pa.unify_schemas(list(distinct), promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        concat([(p, s.empty_table()) for s, p in distinct.items()])        # raises DamagedResults
        raise
    body = [f for f in schema if f.name not in STAMP]
    return pa.schema([*body, pa.field(SOURCE, pa.string()), pa.field(SIZE, pa.int64()), pa.field(MTIME, pa.int64())])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    n = table.num_rows
    columns = [table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(columns, names=schema.names).cast(schema)


def compact_kind(results: Path, kind: Kind, chunk: int = 1000) -> int:
    """Rewrite <results>/<kind>.parquet from its current rows and the journal files it does
    not cover (a damaged compacted file is rebuilt from the journal); return its rows.

    Memory stays bounded by the kept rows plus `chunk` files; the write is atomic
    (temporary file, fsync, rename), so a reader sees the old compaction or the new."""
    folder, target = results / kind.folder, results / f"{kind.folder}.parquet"
    if not folder.is_dir():
        return 0
    journal = listing(folder)
    try:
        keep = read_compacted(target, kind, None, journal) if target.is_file() else None
    except DamagedResults:
        keep = None
    covered = set(keep.column(SOURCE).to_pylist()) if keep is not None else set()
    fresh = [folder / name for name in sorted(journal) if name not in covered]
    if keep is None and not fresh:
        target.unlink(missing_ok=True)            # an empty journal: nothing to cache
        return 0
    # footers one by one: in threads they are no faster, and held 180 KB each (glibc arenas)
    schemas = [(target, keep.schema)] if keep is not None else []
    for path in fresh:
        schema = _footer(path, kind).remove_metadata()
        if not schemas or not schema.equals(schemas[-1][1]):
            schemas.append((path, schema))
    schema = _unified(schemas)
    batches = [fresh[i:i + chunk] for i in range(0, len(fresh), chunk)]
    return _write_atomic(target, schema, _tables(keep, batches, kind))


def _tables(keep: pa.Table | None, batches: list[list[Path]], kind: Kind):
    """The kept rows, then each batch of journal files, one table at a time."""
    if keep is not None:
        yield keep
    for batch in batches:
        parts = read_journal(batch, kind)
        if parts:
            yield concat(parts)


def _write_atomic(target: Path, schema: pa.Schema, tables) -> int:
    """Each table a row group of one file: written to a temporary file, flushed to disk,
    renamed over `target`; return the rows written."""
    rows, tmp = 0, target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        with open(tmp, "wb") as f:
            with pq.ParquetWriter(f, schema) as writer:
                for table in tables:
                    rows += table.num_rows
                    writer.write_table(_conform(table, schema))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
