"""`digits`: scikit-learn's 1,797 real 8x8 handwritten digits (shipped, offline).

Too easy to separate feature spaces (raw pixels reach 0.98 with a balanced
probe); it is the fastest real-data check of the whole pipeline.
"""

from __future__ import annotations

import torch


def split(val_per_class: int, test_per_class: int, train_per_class: int | None, seed: int):
    """Seeded per-class split into (pool, val, test), each (images [n, 1, 8, 8] uint8, labels [n]).

    The pool takes what is left after val and test, capped at train_per_class.
    """
    from sklearn.datasets import load_digits  # lazy: scikit-learn is slow to import

    raw = load_digits()
    images = torch.from_numpy(raw.images * (255 / 16)).round().to(torch.uint8)[:, None]
    labels = torch.from_numpy(raw.target).long()
    g = torch.Generator().manual_seed(seed)
    parts = ([], [], [])
    for c in range(10):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        if val_per_class + test_per_class >= len(members):
            raise ValueError(f"digits class {c} has {len(members)} images: too few for "
                             f"{val_per_class} validation + {test_per_class} test per class")
        end = len(members) if train_per_class is None else val_per_class + test_per_class + train_per_class
        parts[0].append(members[val_per_class + test_per_class:end])
        parts[1].append(members[:val_per_class])
        parts[2].append(members[val_per_class:val_per_class + test_per_class])
    return tuple((images[torch.cat(p)], labels[torch.cat(p)]) for p in parts)
