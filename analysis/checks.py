"""What a results file may hold, checked from its Parquet footer before any of it is read.

A results file is data from elsewhere (a cluster, a colleague, a crash): a 26 KB file
can declare a 50-million-element list and a 351 KB one a million rows, and reading
either would take gigabytes or minutes. So every file's footer (row count, each
column chunk's value count and uncompressed size, the schema) is checked first, and
a file that breaks a limit or has a known column of the wrong type is DamagedResults
naming it; only then are its values read, and the rows' list lengths checked
against num_classes (docs/performance.md, "Limits on a results file").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from trainables import names

MAX_CLASSES = 100_000          # longest per-class list a row may hold (ImageNet-21k has 21,841 classes)
MAX_EPOCHS = 100_000           # rows of one trial's history file
MAX_SELECTION_ROWS = 100_000   # rows of one trial's selection file (strategies x budgets)
MAX_ROW_BYTES = 8 * 2**20      # uncompressed bytes of one row (a 100,000-class trial row is ~3.2 MB)
MAX_FILE_BYTES = 64 * 2**20    # uncompressed bytes of one history or selection file

_STR, _F64, _I64 = pa.string(), pa.float64(), pa.int64()
_ARROW = {int: _I64, float: _F64}
_CONFIG = {"loss.name": _STR, "data.imbalance_ratio": _F64, "eval.sigma": _F64, "seed": _I64, "loss.k": _I64,
           "loss.temperature": _F64, "optim.lr": _F64, "optim.weight_decay": _F64}     # what the report reads


class DamagedResults(ValueError):
    """A results file that is not a whole, well-formed Parquet file of its kind: cut short
    by a crash or a copy, of the wrong schema, or beyond the limits above."""


@dataclass(frozen=True)
class Kind:
    """One kind of results file: its folder, how many rows one file holds, the types
    of the columns analysis knows (a column it does not know may have any type)."""
    folder: str
    min_rows: int
    max_rows: int
    required: tuple[str, ...]
    types: dict[str, pa.DataType] = field(repr=False)
    file_bytes: int = MAX_FILE_BYTES


def _trial_types() -> dict[str, pa.DataType]:
    types = {"trial_id": _STR, "study": _STR, "sweep": _STR, names.STATUS: _STR, "error": _STR,
             names.WALL_TIME: _F64, "device_used": _STR, "git_commit": _STR, "versions": _STR,
             "num_classes": _I64, "class_counts": pa.list_(_I64), "class_order": pa.list_(_I64),
             "draw_digest": _STR, names.CONFIRM_COLUMN: _STR, **_CONFIG}
    for probe in names.PROBES:
        types.update({c: _F64 for c in names.probe_columns(probe)})
        types[names.probe_metric(probe, names.PER_CLASS)] = pa.list_(_F64)
    types.update({names.pretrain_column(n): _ARROW[t] for n, t in names.PRETRAIN_SUMMARY.items()})
    return types


TRIALS = Kind("trials", 1, 1, ("trial_id", "sweep", names.STATUS), _trial_types(), MAX_ROW_BYTES)
HISTORY = Kind("history", 1, MAX_EPOCHS, ("trial_id", names.EPOCH),
               {"trial_id": _STR, names.EPOCH: _I64, **{m: _F64 for m in names.EPOCH_METRICS},
                **{m: pa.list_(_F64) for m in names.EPOCH_LISTS}})
SELECTION = Kind("selection", 1, MAX_SELECTION_ROWS, ("trial_id", "strategy", "budget"),
                 {"trial_id": _STR, "strategy": _STR, "budget": _I64,
                  **{m: _ARROW[t] for m, t in names.SELECTION_MEASURES.items()},
                  names.PER_CLASS: pa.list_(_F64)})
KINDS = {k.folder: k for k in (TRIALS, HISTORY, SELECTION)}


def _damaged(file, what: str) -> DamagedResults:
    return DamagedResults(f"{file}: damaged results file ({what}); move it away and run the sweep "
                          "with --resume to rewrite it")


def check_metadata(file, metadata, kind: Kind, compacted: bool = False) -> pa.Schema:
    """Refuse `file` from its footer alone; return its Arrow schema.

    A journal file (one trial's) holds kind.min_rows..kind.max_rows rows and at most
    kind.file_bytes uncompressed; a compacted file any number of rows, at most
    MAX_ROW_BYTES each. No list column holds more than MAX_CLASSES values per row."""
    rows = metadata.num_rows
    if not compacted and not kind.min_rows <= rows <= kind.max_rows:
        raise _damaged(file, f"{rows:,} rows; a {kind.folder} file holds "
                             + (f"{kind.min_rows}" if kind.min_rows == kind.max_rows
                                else f"{kind.min_rows} to {kind.max_rows:,}"))
    limit = rows * MAX_ROW_BYTES if compacted else kind.file_bytes
    size, values = _sizes(metadata)
    if size > limit:
        raise _damaged(file, f"{size:,} bytes uncompressed, over the limit of {limit:,}")
    schema = metadata.schema.to_arrow_schema()
    for name in (n for n in values if n in schema.names and pa.types.is_list(schema.field(n).type)):
        if values[name] > max(rows, 1) * MAX_CLASSES:
            raise _damaged(file, f"column {name!r} holds {values[name]:,} values in {rows:,} row(s); "
                                 f"at most {MAX_CLASSES:,} classes per row")
    check_schema(file, schema, kind)
    return schema


def _sizes(metadata) -> tuple[int, dict[str, int]]:
    """Total uncompressed bytes, and the value count of each top-level column, over row groups."""
    size, values = 0, {}
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            size += chunk.total_uncompressed_size
            top = chunk.path_in_schema.split(".")[0]
            values[top] = values.get(top, 0) + chunk.num_values
    return size, values


def check_schema(file, schema: pa.Schema, kind: Kind) -> None:
    """Every required column present; every known column of its known type."""
    missing = [n for n in kind.required if n not in schema.names]
    if missing:
        raise _damaged(file, f"no column {', '.join(map(repr, missing))}")
    for f in schema:
        expected = kind.types.get(f.name)
        if expected is not None and not f.type.equals(expected) and not pa.types.is_null(f.type):
            raise _damaged(file, f"column {f.name!r} is {f.type}, expected {expected}")


def check_rows(file, table: pa.Table, kind: Kind) -> None:
    """After the read: ids present; each per-class list as long as the row's num_classes."""
    if table.column("trial_id").null_count:
        raise _damaged(file, "a row without trial_id")
    if kind is not TRIALS or "num_classes" not in table.column_names:
        return
    classes = table.column("num_classes")
    if pc.any(pc.greater(classes, MAX_CLASSES)).as_py() or pc.any(pc.less(classes, 0)).as_py():
        raise _damaged(file, f"num_classes outside 0..{MAX_CLASSES:,}")
    known = [n for n in table.column_names if pa.types.is_list(kind.types.get(n, _I64))]
    for name in known:
        differs = pc.not_equal(pc.list_value_length(table.column(name)), classes)
        if pc.any(differs).as_py():          # null where either is null: a failed trial's row
            raise _damaged(file, f"column {name!r} is not num_classes long")
