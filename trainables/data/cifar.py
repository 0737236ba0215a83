"""CIFAR-10 / CIFAR-100 from the extracted "python version" folders.

    DATA_ROOT/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    DATA_ROOT/cifar-100-python/train, test

Each file is a pickled dict with b"data" ([N, 3072] uint8, rows R, G, B planes of
32x32) and b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100). The files are read
with an unpickler that resolves no global at all except stand-ins for numpy's
array and dtype reconstruction, which accept numeric dtypes only and rebuild the
array with np.frombuffer; a crafted file cannot run code or make numpy read
pointers from it. Its work is bounded too: a few hundred bytes of memo references
can describe a list of a billion shared elements, cheap to unpickle but costly to
turn into an array, so the unpickler counts the objects it creates (MAX_OPS), refuses
a container of more than MAX_ITEMS entries, and a batch nested deeper than a real one
(dict -> list -> number) is refused before numpy sees it. Checksums: with
`data.download` torchvision fetches the archive and verifies its official MD5;
files already on disk are checked for structure (keys, shapes, uint8 data, label
range, balanced classes), not checksums, since test-made files in the same format
cannot carry the official digests.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

FOLDERS = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                       b"labels", 10),
           "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100)}
# Plain numeric dtypes only: an object or structured dtype could make numpy read
# bytes from the file as pointers.
_NUMERIC = {"b1", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8"}
# Bounds on a batch, with margin over the largest real one (CIFAR-100 train: 155 MB,
# about 500,000 pickle opcodes, 50,000 labels and file names per list).
MAX_BYTES = 256 * 2**20
MAX_OPS = 2_000_000
MAX_ITEMS = 100_000


class _Dtype:
    """Stands in for numpy.dtype while unpickling: numeric codes, no fields."""

    def __init__(self, code, align=False, copy=True):
        if not isinstance(code, str) or code not in _NUMERIC:
            raise pickle.UnpicklingError(f"refusing dtype {code!r}: a CIFAR file holds numeric arrays")
        self.code, self.order = code, "|"

    def __setstate__(self, state):
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5 or any(v is not None for v in state[2:5]):
            raise pickle.UnpicklingError("refusing a structured or subarray dtype")
        if state[1] not in ("|", "<", ">", "="):
            raise pickle.UnpicklingError(f"refusing byte order {state[1]!r}")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        return np.dtype(("" if self.order == "|" else self.order) + self.code)


class _Array:
    """Stands in for numpy's array reconstruction: the array is rebuilt from raw bytes
    with np.frombuffer, never by numpy's own unpickling."""

    def __init__(self, cls=None, shape=None, typecode=None):
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("refusing an array state that is not (version, shape, dtype, fortran, bytes)")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _Dtype) or not isinstance(raw, bytes) or not all(isinstance(n, int) for n in shape):
            raise pickle.UnpicklingError("refusing an array that is not numeric raw bytes")
        array = np.frombuffer(raw, dtype=dtype.resolve())
        self.array = array.reshape(shape, order="F" if fortran else "C").copy()


def _latin1(text, encoding="latin1"):
    """Protocol-2 pickles from Python 3 spell bytes as _codecs.encode(text, "latin1")."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("refusing a codec call other than latin1 bytes")
    return text.encode("latin1")


def _frombuffer(raw, dtype, shape, order):
    """Protocol 5's array path (numpy._core.numeric._frombuffer), numeric dtypes only."""
    if not isinstance(dtype, _Dtype) or not isinstance(raw, (bytes, bytearray)) or order not in ("C", "F"):
        raise pickle.UnpicklingError("refusing an array that is not numeric raw bytes")
    holder = _Array()
    holder.array = np.frombuffer(bytes(raw), dtype=dtype.resolve()).reshape(shape, order=order).copy()
    return holder


_ALLOWED = {("numpy._core.numeric", "_frombuffer"): _frombuffer, ("numpy.core.numeric", "_frombuffer"): _frombuffer,
            ("numpy.core.multiarray", "_reconstruct"): _Array, ("numpy._core.multiarray", "_reconstruct"): _Array,
            ("numpy", "ndarray"): None, ("numpy", "dtype"): _Dtype, ("_codecs", "encode"): _latin1}


# Opcodes after which the top of the stack is a container that may have grown.
_GROWS = {op[0] for op in (pickle.APPEND, pickle.APPENDS, pickle.SETITEM, pickle.SETITEMS, pickle.LIST,
                           pickle.TUPLE, pickle.DICT, pickle.ADDITEMS, pickle.FROZENSET)}


def _bounded(op: int, load):
    """One opcode's loader, counted against MAX_OPS (each opcode creates at most one
    object) and, for the container opcodes, checked against MAX_ITEMS after it ran."""
    grows, build = op in _GROWS, op == pickle.BUILD[0]

    def step(self):
        self.ops += 1
        if self.ops > MAX_OPS:
            raise pickle.UnpicklingError(f"refusing a batch of more than {MAX_OPS:,} pickle objects")
        if build and not isinstance(self.stack[-2], (_Array, _Dtype)):
            # BUILD on anything else would set attributes on it (on the stand-ins' classes too)
            raise pickle.UnpicklingError("refusing to set state on anything but an array or dtype")
        load(self)
        if grows and len(self.stack[-1]) > MAX_ITEMS:
            raise pickle.UnpicklingError(f"refusing a container of more than {MAX_ITEMS:,} items")
    return step


class _ArraysOnly(pickle._Unpickler):
    """The pure-Python unpickler, every opcode bounded by _bounded: the C one offers no
    hook per opcode, and this one costs at most about a second more on a batch of
    CIFAR-100's size (docs/data.md)."""
    dispatch = {op: _bounded(op, load) for op, load in pickle._Unpickler.dispatch.items()}
    ops = 0

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR file holds only arrays and lists")


def _check_flat(entry) -> None:
    """A real batch is a dict whose values are an array, bytes, a number or a flat list
    of numbers or names (depth 2); anything nested deeper is refused here, before numpy
    would expand shared references into memory."""
    if not isinstance(entry, dict):
        raise pickle.UnpicklingError(f"refusing a {type(entry).__name__}: a CIFAR batch is a dict")
    leaf = (int, float, bytes, str)
    for key, value in entry.items():
        if isinstance(value, (_Array, *leaf)):
            continue
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, leaf) for v in value):
            raise pickle.UnpicklingError(f"refusing {key!r:.40}: nested deeper than a batch's dict -> list -> number")


def _unpickle(path: Path) -> dict:
    """The batch's dict, within the bounds of the module docstring."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise pickle.UnpicklingError(f"refusing {size:,} bytes: the largest CIFAR file has 155 MB")
    try:
        entry = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except pickle.UnpicklingError:
        raise
    except Exception as e:      # a malformed stream fails in the pure-Python unpickler with any of a dozen types
        raise pickle.UnpicklingError(f"{type(e).__name__}: {e}") from None
    _check_flat(entry)
    return entry


def read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR file -> images [N, 3, 32, 32] uint8, labels [N] int64; ValueError if malformed."""
    try:
        entry = _unpickle(path)
        data, labels = entry[b"data"], entry[label_key]
    except (pickle.UnpicklingError, KeyError) as e:
        raise ValueError(f"{path}: not a CIFAR python batch ({e})") from None
    data = data.array if isinstance(data, _Array) else data
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        # a cast would wrap values over 255 and truncate fractions without a word
        raise ValueError(f"{path}: data must be a uint8 array (pixels 0..255), got "
                         f"{getattr(data, 'dtype', type(data).__name__)}")
    labels = _labels(path, labels, num_classes)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and {len(labels)}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _labels(path: Path, value, num_classes: int) -> np.ndarray:
    """A flat list (or 1-D integer array) of labels in 0..num_classes-1, as int64. The range
    is checked before the cast: a label past int64 would otherwise raise OverflowError."""
    if isinstance(value, _Array):
        value = value.array
        if value is None or value.ndim != 1 or value.dtype.kind not in "iu":
            raise ValueError(f"{path}: labels must be a flat list of integers")
    elif not isinstance(value, (list, tuple)) or not all(type(v) is int for v in value):
        raise ValueError(f"{path}: labels must be a flat list of integers")
    if len(value) and (min(value) < 0 or max(value) >= num_classes):
        low, high = int(min(value)), int(max(value))
        found = f"{low}..{high}" if max(-low, high) < 10**12 else "a label of 13 digits or more"
        raise ValueError(f"{path}: labels outside 0..{num_classes - 1} (found {found})")
    return np.asarray(value, dtype=np.int64)


def _download(name: str, root: Path) -> None:
    import torchvision
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load(name: str, root: str | Path, download: bool = False):
    """(train images, train labels), (test images, test labels), number of classes."""
    folder, train_files, test_files, label_key, num_classes = FOLDERS[name]
    root = Path(root)
    if download:
        _download(name, root)
    base = root / folder
    missing = [f for f in train_files + test_files if not (base / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: expected the extracted python version in {base} "
                                f"({', '.join(train_files + test_files)}); missing {', '.join(missing)}. "
                                f"Extract the official archive there, or pass --download")
    splits = []
    for files in (train_files, test_files):
        parts = [read_batch(base / f, label_key, num_classes) for f in files]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        counts = torch.bincount(y, minlength=num_classes)
        if counts.min() != counts.max():
            raise ValueError(f"{base}: classes are not balanced ({counts.min()}..{counts.max()} images): "
                             f"not the original CIFAR split")
        splits.append((x, y))
    return splits[0], splits[1], num_classes
