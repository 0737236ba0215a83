import pytest
import torch

from trainables.config import DataConfig
from trainables.data import balanced_indices, load_splits, longtail_indices, shapes
from trainables.data.longtail import longtail_counts


def test_shapes_is_deterministic_under_its_seed():
    a_x, a_y = shapes.generate(5, seed=11)
    b_x, b_y = shapes.generate(5, seed=11)
    c_x, _ = shapes.generate(5, seed=12)
    assert torch.equal(a_x, b_x) and torch.equal(a_y, b_y)
    assert not torch.equal(a_x, c_x)
    assert a_x.dtype == torch.uint8 and a_x.shape == (50, 3, 32, 32)


def test_shapes_splits_are_balanced_and_images_differ_within_a_class():
    s = load_splits(DataConfig(train_per_class=30, val_per_class=4, test_per_class=6))
    for y, n in ((s.pool_y, 30), (s.val_y, 4), (s.test_y, 6)):
        assert torch.bincount(y, minlength=10).tolist() == [n] * 10
    for c in range(10):
        imgs = s.pool_x[s.pool_y == c].float()
        assert len(torch.unique(imgs.flatten(1), dim=0)) == 30
        # not just noise apart: mean absolute difference between two images of a class
        assert (imgs[0] - imgs[1]).abs().mean() > 10


def test_shapes_splits_are_distinct_draws():
    s = load_splits(DataConfig(train_per_class=30, val_per_class=4, test_per_class=6))
    pool = {tuple(x.flatten().tolist()) for x in s.pool_x}
    assert not any(tuple(x.flatten().tolist()) in pool for x in s.test_x)


def test_digits_split_is_disjoint_and_balanced_in_val_and_test():
    s = load_splits(DataConfig(dataset="digits", val_per_class=10, test_per_class=50))
    assert torch.bincount(s.val_y, minlength=10).tolist() == [10] * 10
    assert torch.bincount(s.test_y, minlength=10).tolist() == [50] * 10
    assert len(s.pool_y) + len(s.val_y) + len(s.test_y) == 1797
    assert s.pool_x.shape[1:] == (1, 8, 8) and s.kind == "gray"


def test_longtail_draw_follows_the_seeded_class_order():
    s = load_splits(DataConfig(train_per_class=30, val_per_class=4, test_per_class=6))
    idx, counts, order = longtail_indices(s, 10.0, None, seed=4)
    assert torch.bincount(s.pool_y[idx], minlength=10).tolist() == counts
    assert [counts[c] for c in order] == longtail_counts(30, 10, 10.0)
    assert sorted(order) == list(range(10))
    assert order != list(range(10)) or longtail_indices(s, 10.0, None, seed=5)[2] != order
    assert len(torch.unique(idx)) == len(idx)


def test_fixed_total_and_balanced_subset_have_the_same_size():
    s = load_splits(DataConfig(train_per_class=30, val_per_class=4, test_per_class=6))
    idx, counts, _ = longtail_indices(s, 5.0, 100, seed=0)
    assert len(idx) == sum(counts) == 100
    bal = balanced_indices(s, len(idx), seed=0)
    assert torch.bincount(s.pool_y[bal], minlength=10).tolist() == [10] * 10


def test_a_total_the_pool_cannot_supply_is_refused():
    s = load_splits(DataConfig(train_per_class=30, val_per_class=4, test_per_class=6))
    with pytest.raises(ValueError, match="head class"):
        longtail_indices(s, 10.0, 290, seed=0)
