import pytest
import torch

from trainables.config import DataConfig, TrialConfig
from trainables.data import balanced_indices, imagelist, load_splits, longtail_indices, shapes
from trainables.data.longtail import longtail_counts
from trainables.trial import plan_data


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


# ------------------------------------------------------------------ list datasets refused before decoding

def _ppm_header(width, height) -> bytes:
    """A PPM whose header declares width x height (PIL reads the size without the pixels)."""
    return f"P6\n{width} {height}\n255\n".encode() + bytes(64)


def _append(root, name, line, file: bytes | None = None):
    """Append `line` to the list `name`; write `file` (bytes) as the line's image first."""
    if file is not None:
        (root / line.split()[0]).write_bytes(file)
    (root / name).write_text((root / name).read_text() + line + "\n")


# Each edit of the list_root dataset (train: classes 0, 1, 2 with 12 / 6 / 3 images, lines
# 1-21; val: 6 lines; test: 9 lines) and the one-line refusal it must give.
BAD_LISTS = {
    "single train class": (lambda r: (r / "train.txt").write_text("train/c0/img0.png 0\ntrain/c0/img1.jpg 0\n"),
                           "train.txt: the train list has one class (0); a study compares classes, so it needs at "
                           "least 2"),
    "train class missing": (lambda r: (r / "train.txt").write_text("train/c0/img0.png 0\ntrain/c2/img0.png 2\n"),
                            "train.txt: labels must be 0..C-1 with every class in the train list; 1 of 0..2 have "
                            "no image (first: [1])"),
    "test label without train images": (lambda r: _append(r, "test.txt", "test/c0/img0.png 3"),
                                        "test.txt: label 3 has no train image (the train list train.txt has "
                                        "classes 0..2)"),
    "val label without train images": (lambda r: _append(r, "val.txt", "val/c0/img0.png 7"),
                                       "val.txt: label 7 has no train image"),
    "label 10**12": (lambda r: _append(r, "train.txt", "train/c0/img0.png 1000000000000"),
                     "train.txt:22: label 1000000000000 is over the limit: labels are 0..99,999"),
    "label 3,000,000": (lambda r: _append(r, "test.txt", "test/c0/img0.png 3000000"),
                        "test.txt:10: label 3000000 is over the limit: labels are 0..99,999"),
    "label of 5,000 digits": (lambda r: _append(r, "train.txt", "train/c0/img0.png " + "9" * 5000),
                              "train.txt:22: label 99999999999999999999 is over the limit"),
    "image over the pixel limit": (lambda r: _append(r, "test.txt", "big.ppm 0", _ppm_header(8000, 8000)),
                                   "test.txt:10: " + str(r"{root}/big.ppm: 8000x8000 is over the limit of "
                                                         "50,000,000 pixels per image")),
    "image PIL would warn of": (lambda r: _append(r, "test.txt", "warn.ppm 0", _ppm_header(10000, 10000)),
                                "warn.ppm: 10000x10000 is over the limit of 50,000,000 pixels per image"),
    "pixel bomb PIL refuses": (lambda r: _append(r, "test.txt", "bomb.ppm 0", _ppm_header(20000, 20000)),
                               "bomb.ppm: over the limit of 50,000,000 pixels per image (Image size (400000000 "
                               "pixels) exceeds limit"),
    "test image missing": (lambda r: _append(r, "test.txt", "test/c0/gone.png 0"), "does not exist"),
    "test file not an image": (lambda r: _append(r, "test.txt", "notes.txt 0", b"no image"),
                               "notes.txt: not a readable image"),
    # a header that reads and a body that does not: found while decoding, after train and val decoded
    "test image truncated": (lambda r: _append(r, "test.txt", "cut.png 0", (r / "train/c0/img0.png").read_bytes()[:60]),
                             "cut.png: not a readable image"),
}


@pytest.mark.parametrize("case", list(BAD_LISTS))
def test_a_bad_list_dataset_is_refused_in_one_line_and_leaves_no_cache(case, list_root, tmp_path):
    import time
    edit, words = BAD_LISTS[case]
    edit(list_root)
    start = time.perf_counter()
    for cache_dir in (None, str(tmp_path / "elsewhere")):
        cfg = TrialConfig.from_flat({"data.dataset": "imagelist", "data.data_root": str(list_root),
                                     "data.image_size": 16, "data.cache_dir": cache_dir})
        with pytest.raises(ValueError) as err:       # plan_data: what the sweep's validation runs
            plan_data(cfg)
        assert words.format(root=list_root) in str(err.value) and "\n" not in str(err.value)
    assert time.perf_counter() - start < 2.0
    assert not (list_root / ".cache").exists() and not (tmp_path / "elsewhere").exists()
    assert list(tmp_path.rglob(".tmp-*")) == [] and list(tmp_path.rglob("*.npy")) == []


def test_the_valid_list_dataset_writes_both_arrays_of_every_list(list_root):
    s = load_splits(DataConfig(dataset="imagelist", data_root=str(list_root), image_size=16))
    assert s.num_classes == 3 and len(s.pool_y) + len(s.val_y) + len(s.test_y) == 21 + 6 + 9
    names = sorted(p.name.split("-")[0] + "." + p.name.rsplit(".", 2)[1] for p in (list_root / ".cache").iterdir())
    assert names == [f"{n}.txt.{kind}" for n in ("test", "train", "val") for kind in ("images", "labels")]


def test_a_cache_write_that_fails_leaves_no_file_behind(list_root, monkeypatch):
    import numpy as np
    real_save, calls = np.save, []

    def save(f, array, **kwargs):          # the labels array of the first list: after its images
        calls.append(array.shape)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_save(f, array, **kwargs)
    monkeypatch.setattr(imagelist.np, "save", save)
    with pytest.raises(ValueError) as err:
        imagelist.load(list_root / "train.txt", list_root, 16)
    assert str(err.value) == (f"cannot write the decode cache in {list_root / '.cache'} (No space left on device): "
                              "set data.cache_dir to a writable folder")
    assert not (list_root / ".cache").exists() and list(list_root.rglob(".tmp-*")) == []


def test_an_image_over_the_limit_is_refused_from_its_header_without_a_pil_warning(tmp_path):
    # 10000 x 10000 is past PIL's own warning (89 megapixels), which would print two
    # more lines before the one-line refusal
    import time
    import warnings
    path = tmp_path / "big.ppm"
    path.write_bytes(_ppm_header(10000, 10000))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as seen, pytest.raises(ValueError) as err:
        imagelist.check_headers([path], ["list.txt:3"])
    assert time.perf_counter() - start < 0.5 and [str(w.message) for w in seen] == []
    assert str(err.value) == f"list.txt:3: {path}: 10000x10000 is over the limit of 50,000,000 pixels per image"
