"""CIFAR-10 / CIFAR-100 from the extracted "python version" folders.

    DATA_ROOT/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    DATA_ROOT/cifar-100-python/train, test

Each file is a pickled dict with b"data" ([N, 3072] uint8, rows R, G, B planes of
32x32) and b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100). The files are read
with an unpickler that resolves nothing but numpy's array reconstruction, so a
crafted file cannot run code. Checksums: with `data.download` torchvision fetches
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
# What a CIFAR pickle may reference: numpy's array reconstruction, nothing else.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR file holds only arrays and lists")


def read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR file -> images [N, 3, 32, 32] uint8, labels [N] int64; ValueError if malformed."""
    try:
        entry = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as e:
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
