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

Bad input is refused before any image is decoded: each line, each file's header (an
image of at most MAX_PIXELS), then the labels of all lists together (a dense range
0..C-1 that the train list covers, C >= 2, labels below MAX_CLASSES). The caches are
written only after every list has decoded, each pair of arrays all or nothing, so a
dataset that fails leaves no cache and no temporary file behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

# 100,000 classes: ten times iNaturalist 2021's 10,000. A label is refused above it
# while its list is read, before anything is sized by the number of classes.
MAX_CLASSES = 100_000
# 50 megapixels: one such image is 150 MB as RGB, 1.2 GB across the 8 decode threads.
# Checked from the header, before decoding (PIL's own DecompressionBombError comes
# at 179 megapixels and says nothing of the list).
MAX_PIXELS = 50_000_000


def _label(text: str, where: str, line: str, limit: int = MAX_CLASSES) -> int:
    """A list's label field as an int in 0..limit-1; ValueError naming the entry otherwise."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{where}: expected 'relative/path label' with a label >= 0, got {line[:200]!r}")
    if len(text) > len(str(limit)) or int(text) >= limit:
        raise ValueError(f"{where}: label {text[:20]} is over the limit: labels are 0..{limit - 1:,}")
    return int(text)


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
        if len(fields) != 2:
            raise ValueError(f"{where}: expected 'relative/path label' with a label >= 0, got {line[:200]!r}")
        label = _label(fields[1], where, line)
        path = (root / fields[0]).resolve()
        if Path(fields[0]).is_absolute() or not path.is_relative_to(root):
            raise ValueError(f"{where}: {fields[0]!r} is outside the image root {root}")
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image {path} does not exist")
        paths.append(path)
        labels.append(label)
        lines.append(where)
    if not paths:
        raise ValueError(f"{list_path}: no images listed")
    check_headers(paths, lines)
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
        if len(fields) != 2:
            raise ValueError(f"{list_path}:{number}: expected 'path label', got {line[:200]!r}")
        counts[_label(fields[1], f"{list_path}:{number}", line, num_classes)] += 1
    return counts


def check_labels(lists: list[Path], labels: list[np.ndarray]) -> int:
    """The number of classes C, if the train list (the first) holds every label 0..C-1,
    C >= 2, and the others only labels it holds: a class without train images could
    never be predicted, and a sparse label (3,000,000 of 3 classes) would size every
    per-class array by its value. ValueError naming the list otherwise."""
    present = set(np.unique(labels[0]).tolist())
    num_classes = max(present) + 1
    if min(present) < 0 or num_classes > MAX_CLASSES:     # only from a cache written by older code
        raise ValueError(f"{lists[0]}: labels must be 0..{MAX_CLASSES - 1:,}")
    if len(present) < 2:
        raise ValueError(f"{lists[0]}: the train list has one class ({num_classes - 1}); "
                         "a study compares classes, so it needs at least 2")
    if len(present) != num_classes:
        missing = sorted(set(range(num_classes)) - present)
        raise ValueError(f"{lists[0]}: labels must be 0..C-1 with every class in the train list; "
                         f"{len(missing)} of 0..{num_classes - 1} have no image (first: {missing[:5]})")
    for path, other in zip(lists[1:], labels[1:]):
        unknown = sorted(set(np.unique(other).tolist()) - present)
        if unknown:
            raise ValueError(f"{path}: label {unknown[0]} has no train image "
                             f"(the train list {lists[0].name} has classes 0..{num_classes - 1})")
    return num_classes


def _opened(path: Path, name: str):
    """PIL's lazy open, which reads the header only; ValueError naming the entry if the
    file is not an image or holds more than MAX_PIXELS (refused before any decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ValueError(f"{name}: over the limit of {MAX_PIXELS:,} pixels per image ({e})") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{name}: not a readable image ({e})") from None
    if img.width * img.height > MAX_PIXELS:
        img.close()
        raise ValueError(f"{name}: {img.width}x{img.height} is over the limit of {MAX_PIXELS:,} pixels per image")
    return img


def check_headers(paths: list[Path], lines: list[str], workers: int = 8) -> None:
    """Every listed file is an image within MAX_PIXELS, from its header: a bad file is
    reported before a single image is decoded, and a pixel bomb is never decoded."""
    # An image between PIL's warning (89 megapixels) and its error is over MAX_PIXELS and
    # refused in one line; PIL's warning would print two more lines before it. Set here,
    # before the threads start, not at import: test runners restore the filters after it.
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit", module="PIL")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda i: _opened(paths[i], f"{lines[i]}: {paths[i]}").close(), range(len(paths))))


def decode(path: Path, size: int, where: str = "") -> np.ndarray:
    """An image file -> [3, size, size] uint8 (shorter side resized to size, centre crop);
    `where` ("list:line") names the entry in the error of an unreadable or oversized file."""
    from PIL import Image

    name = f"{where + ': ' if where else ''}{path}"
    with _opened(path, name) as img:
        try:
            img = img.convert("RGB")
        except OSError as e:            # a header that reads but a body that does not
            raise ValueError(f"{name}: not a readable image ({e})") from None
        scale = size / min(img.size)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((w, h), Image.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def _cache_paths(list_path: Path, image_root: Path, size: int, cache_dir: Path | None) -> tuple[Path, Path]:
    digest = hashlib.sha256(list_path.read_bytes() + str(image_root.resolve()).encode()).hexdigest()[:16]
    folder = cache_dir or image_root / ".cache"
    stem = f"{list_path.name}-{size}-{digest}"          # the full name: "lt.v2.txt" keeps its dots
    return folder / f"{stem}.images.npy", folder / f"{stem}.labels.npy"


def _save_cache(arrays: tuple[np.ndarray, np.ndarray], files: tuple[Path, Path]) -> None:
    """Both arrays or neither: each is written to a temporary file, and the two are
    renamed into place only when both are complete; on failure nothing of it remains."""
    folder, temporary = files[0].parent, []
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for array in arrays:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npy")
            temporary.append(tmp)
            with os.fdopen(fd, "wb") as f:
                np.save(f, array, allow_pickle=False)
        for tmp, path in zip(temporary, files):
            os.replace(tmp, path)
    except BaseException:
        for leftover in [*temporary, *files]:
            Path(leftover).unlink(missing_ok=True)
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _decode_all(paths: list[Path], lines: list[str], size: int, workers: int) -> np.ndarray:
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)   # filled in place: no second copy

    def fill(i):
        images[i] = decode(paths[i], size, lines[i])
    with ThreadPoolExecutor(max_workers=workers) as pool:    # PIL decodes without the GIL
        list(pool.map(fill, range(len(paths))))
    return images


def _read(list_path: Path, files: tuple[Path, Path], image_root: Path) -> tuple:
    """(images, labels, None) from a matching cache, or (None, labels, (paths, lines)) to decode."""
    if all(f.is_file() for f in files):
        images, labels = (np.load(f, allow_pickle=False) for f in files)
        return images, labels, None
    paths, labels, lines = parse_list(list_path, image_root)
    return None, np.asarray(labels, dtype=np.int64), (paths, lines)


def load_lists(list_paths: list[Path], image_root: Path, size: int, cache_dir: Path | None = None,
               workers: int = 8) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """A dataset's lists (train first): each list's images [N, 3, size, size] uint8 and
    labels [N], and the number of classes. Labels are checked (check_labels) before any
    image is decoded; caches are read where they match, written only after all decoded."""
    for path in list_paths:
        if not path.is_file():
            raise FileNotFoundError(f"list file {path} does not exist")
    files = [_cache_paths(p, image_root, size, cache_dir) for p in list_paths]
    entries = [_read(p, pair, image_root) for p, pair in zip(list_paths, files)]
    num_classes = check_labels(list_paths, [labels for _, labels, _ in entries])
    images = [cached if todo is None else _decode_all(*todo, size, workers) for cached, _, todo in entries]
    for x, (_, y, todo), pair in zip(images, entries, files):
        if todo is not None:
            _write_cache((x, y), pair)
    return [(torch.from_numpy(x), torch.from_numpy(y)) for x, (_, y, _) in zip(images, entries)], num_classes


def _write_cache(arrays: tuple[np.ndarray, np.ndarray], files: tuple[Path, Path]) -> None:
    try:
        _save_cache(arrays, files)
    except OSError as e:
        raise ValueError(f"cannot write the decode cache in {files[0].parent} ({e.strerror}): "
                         f"set data.cache_dir to a writable folder") from None


def load(list_path: Path, image_root: Path, size: int, cache_dir: Path | None = None,
         workers: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """One list's images and labels, the list checked as a train list (load_lists)."""
    return load_lists([list_path], image_root, size, cache_dir, workers)[0][0]


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
