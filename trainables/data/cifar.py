"""CIFAR-10 / CIFAR-100 from the extracted "python version" folders.

    DATA_ROOT/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    DATA_ROOT/cifar-100-python/train, test

Each file is a pickled dict with b"data" ([N, 3072] uint8, rows R, G, B planes of
32x32) and b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100). The files are read
with an unpickler that resolves no global at all except stand-ins for numpy's
array and dtype reconstruction, which accept numeric dtypes only and rebuild the
array with np.frombuffer; a crafted file cannot run code or make numpy read
pointers from it. Checksums: with `data.download` torchvision fetches
the archive and verifies its official MD5; files already on disk are checked for
structure (keys, shapes, dtype, label range, balanced classes), not checksums,
since test-made files in the same format cannot carry the official digests.
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


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR file holds only arrays and lists")


def _plain(value):
    return value.array if isinstance(value, _Array) else value


def read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR file -> images [N, 3, 32, 32] uint8, labels [N] int64; ValueError if malformed."""
    try:
        entry = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(_plain(entry[b"data"]), dtype=np.uint8)
        labels = np.asarray(_plain(entry[label_key]), dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError, AttributeError) as e:
        raise ValueError(f"{path}: not a CIFAR python batch ({e})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and {len(labels)}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise ValueError(f"{path}: labels outside 0..{num_classes - 1}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


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
