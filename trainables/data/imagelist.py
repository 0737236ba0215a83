"""List datasets in the ImageNet-LT / iNaturalist-LT format.

A list file has one `relative/path.jpg label` per line; paths are relative to
the image root and may not leave it. Images are decoded once (in parallel
threads), resized (shorter side to `size`, then a centre crop), and cached as
uint8 arrays next to the data:

    IMAGE_ROOT/.cache/<list name>-<size>-<digest>.images.npy   [N, 3, size, size]
    IMAGE_ROOT/.cache/<list name>-<size>-<digest>.labels.npy   [N]

The digest covers the list's bytes, so an edited list gets a new cache and a
stale one is never read; arrays are loaded with allow_pickle=False. A trial then
moves the arrays onto its device and never decodes an image in its loop. A set
too large for memory would need a memory-mapped cache (np.load(mmap_mode="r"))
and batches copied per step; that path is not built yet.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch


def parse_list(list_path: Path, image_root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Read `path label` lines; raise ValueError naming the file and line of any bad one.

    Returns the resolved paths, their labels and each entry's "file:line"."""
    if not list_path.is_file():
        raise FileNotFoundError(f"list file {list_path} does not exist")
    root = image_root.resolve()
    paths, labels, lines = [], [], []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{list_path}:{number}"
        if len(fields) != 2 or not (fields[1].isascii() and fields[1].isdigit()):
            raise ValueError(f"{where}: expected 'relative/path label' with a label >= 0, got {line!r}")
        path = (root / fields[0]).resolve()
        if Path(fields[0]).is_absolute() or not path.is_relative_to(root):
            raise ValueError(f"{where}: {fields[0]!r} is outside the image root {root}")
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image {path} does not exist")
        paths.append(path)
        labels.append(int(fields[1]))
        lines.append(where)
    if not paths:
        raise ValueError(f"{list_path}: no images listed")
    return paths, labels, lines


def count_labels(list_path: Path, num_classes: int) -> list[int]:
    """Images per class in a list file, read for its profile only (images not opened)."""
    if not list_path.is_file():
        raise FileNotFoundError(f"profile list {list_path} does not exist")
    counts = [0] * num_classes
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not (fields[1].isascii() and fields[1].isdigit()) or int(fields[1]) >= num_classes:
            raise ValueError(f"{list_path}:{number}: expected 'path label' with 0 <= label < "
                             f"{num_classes}, got {line!r}")
        counts[int(fields[1])] += 1
    return counts


def decode(path: Path, size: int, where: str = "") -> np.ndarray:
    """An image file -> [3, size, size] uint8 (shorter side resized to size, centre crop);
    `where` ("list:line") names the entry in the error of an unreadable file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = size / min(img.size)
            w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
            img = img.resize((w, h), Image.BILINEAR)
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{where + ': ' if where else ''}{path}: not a readable image ({e})") from None


def _cache_paths(list_path: Path, image_root: Path, size: int, cache_dir: Path | None) -> tuple[Path, Path]:
    digest = hashlib.sha256(list_path.read_bytes() + str(image_root.resolve()).encode()).hexdigest()[:16]
    folder = cache_dir or image_root / ".cache"
    stem = f"{list_path.name}-{size}-{digest}"          # the full name: "lt.v2.txt" keeps its dots
    return folder / f"{stem}.images.npy", folder / f"{stem}.labels.npy"


def _save_atomic(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def load(list_path: Path, image_root: Path, size: int, cache_dir: Path | None = None,
         workers: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The listed images [N, 3, size, size] uint8 and labels [N], from the cache when it matches."""
    if not list_path.is_file():
        raise FileNotFoundError(f"list file {list_path} does not exist")
    images_file, labels_file = _cache_paths(list_path, image_root, size, cache_dir)
    if images_file.is_file() and labels_file.is_file():
        images = np.load(images_file, allow_pickle=False)
        labels = np.load(labels_file, allow_pickle=False)
    else:
        paths, label_list, lines = parse_list(list_path, image_root)
        images = np.empty((len(paths), 3, size, size), dtype=np.uint8)   # filled in place: no second copy

        def fill(i):
            images[i] = decode(paths[i], size, lines[i])
        with ThreadPoolExecutor(max_workers=workers) as pool:    # PIL decodes without the GIL
            list(pool.map(fill, range(len(paths))))
        labels = np.asarray(label_list, dtype=np.int64)
        try:
            _save_atomic(images, images_file)
            _save_atomic(labels, labels_file)
        except OSError as e:
            raise ValueError(f"cannot write the decode cache in {images_file.parent} ({e.strerror}): "
                             f"set data.cache_dir to a writable folder") from None
    return torch.from_numpy(images), torch.from_numpy(labels)


def power_counts(counts: list[int], power: float) -> list[int]:
    """The paper's fixed-total series from a list's class counts: n_c^p rescaled to the
    same total (largest-remainder rounding). p = 1 keeps the counts, p = 0 balances them."""
    n = np.asarray(counts, dtype=float)
    shaped = n ** power
    exact = shaped / shaped.sum() * n.sum()
    out = np.floor(exact).astype(int)
    for i in np.argsort(out - exact)[: int(n.sum()) - out.sum()]:
        out[i] += 1
    return out.tolist()
