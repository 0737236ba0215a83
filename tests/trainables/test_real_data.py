"""CIFAR and list datasets, on small files written here in the exact on-disk formats."""

import pickle

import pytest
import torch
from fixtures import COLOURS, COUNTS, write_image

from trainables.config import DataConfig, TrialConfig
from trainables.presets import SMOKE
from trainables.data import cifar, imagelist, load_splits, longtail_indices
from trainables.data.longtail import longtail_counts
from trainables.trial import main, plan_data, run_trial


def test_cifar10_reads_images_labels_and_the_standard_longtail_counts(cifar_root):
    s = load_splits(DataConfig(dataset="cifar10", data_root=str(cifar_root)))
    assert s.pool_x.shape == (600, 3, 32, 32) and s.test_x.shape == (100, 3, 32, 32)
    assert s.pool_x.dtype == torch.uint8 and len(s.val_y) == 0          # no validation by default
    # the label written into the first byte (the R plane's first pixel) comes back as the label
    assert torch.equal(s.pool_x[:, 0, 0, 0].long(), s.pool_y)
    assert torch.equal(s.pool_x[:, 1, 0, 0].long(), 255 - s.pool_y)
    assert torch.bincount(s.test_y).tolist() == [10] * 10
    idx, counts, order = longtail_indices(s, 10.0, None, seed=0)
    assert counts == longtail_counts(60, 10, 10.0) and order == list(range(10))   # label order
    assert torch.bincount(s.pool_y[idx], minlength=10).tolist() == counts


def test_cifar100_and_a_held_out_validation_slice(cifar_root):
    s = load_splits(DataConfig(dataset="cifar100", data_root=str(cifar_root), val_per_class=1))
    assert s.num_classes == 100 and len(s.val_y) == 100 and len(s.pool_y) == 500
    assert torch.bincount(s.val_y, minlength=100).tolist() == [1] * 100
    assert torch.equal(s.pool_x[:, 0, 0, 0].long(), s.pool_y)


@pytest.mark.parametrize("protocol", [2, 5])
def test_object_and_structured_arrays_are_refused(tmp_path, protocol):
    import numpy as np
    path = tmp_path / "data_batch_1"
    for bad, code in ((np.array([1, "a"], dtype=object), "O"), (np.zeros(2, dtype=[("a", "u1")]), "V")):
        path.write_bytes(pickle.dumps({b"data": bad, b"labels": [0]}, protocol=protocol))
        with pytest.raises(ValueError, match=f"refusing dtype '{code}"):
            cifar.read_batch(path, b"labels", 10)


def test_a_pickle_that_references_anything_but_arrays_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match="refusing .*print"):
        cifar.read_batch(path, b"labels", 10)


def test_a_missing_cifar_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--smoke", "--dataset", "cifar10", "--data-root", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cifar-10-batches-py" in err and "data_batch_1" in err


def test_smoke_trial_on_test_made_cifar(cifar_root):
    # width 8, not 4: on this CPU, oneDNN's channels_last backward of ResNet-32 at width 4
    # does not finish in minutes (width 8: 0.4 s per step)
    cfg = TrialConfig.from_flat({**SMOKE, "data.dataset": "cifar10", "data.data_root": str(cifar_root),
                                 "data.val_per_class": 2, "model.arch": "resnet32", "model.width": 8})
    result = run_trial(cfg)
    assert result.status == "ok" and len(result.probes["lt"]["per_class_acc"]) == 10
    assert sum(result.class_counts) == sum(longtail_counts(58, 10, 10.0))


# ------------------------------------------------------------------ list datasets

def test_list_dataset_labels_counts_and_pixels(list_root):
    s = load_splits(DataConfig(dataset="imagelist", data_root=str(list_root), image_size=16))
    assert s.pool_x.shape == (21, 3, 16, 16) and s.test_x.shape == (9, 3, 16, 16)
    assert torch.bincount(s.pool_y).tolist() == [12, 6, 3] and s.num_classes == 3
    # each class's colour survives decoding (JPEG within a few levels)
    for label, colour in COLOURS.items():
        mean = s.pool_x[s.pool_y == label].float().mean(dim=(0, 2, 3))
        assert torch.allclose(mean, torch.tensor(colour, dtype=torch.float), atol=6)
    idx, counts, order = longtail_indices(s, 10.0, None, seed=0)     # the ratio is unused here
    assert counts == [12, 6, 3] and order == [0, 1, 2] and len(idx) == 21


def test_power_series_keeps_the_total_and_draws_nested(list_root):
    assert imagelist.power_counts([12, 6, 3], 1.0) == [12, 6, 3]
    assert imagelist.power_counts([12, 6, 3], 0.0) == [7, 7, 7]
    half = imagelist.power_counts([12, 6, 3], 0.5)
    assert sum(half) == 21 and half[0] < 12 and half[2] > 3
    # the profile of the long-tailed list, drawn from a fuller (balanced) train list
    (list_root / "profile.txt").write_text((list_root / "train.txt").read_text())
    full = "\n".join(f"train/c{c}/img{i % COUNTS[c]}.{'jpg' if (i % COUNTS[c]) % 2 else 'png'} {c}"
                     for c in range(3) for i in range(12))
    (list_root / "full.txt").write_text(full + "\n")
    cfg = DataConfig(dataset="imagelist", data_root=str(list_root), image_size=16,
                     train_list="full.txt", profile_list="profile.txt")
    s = load_splits(cfg)
    a, counts_a, _ = longtail_indices(s, 1.0, None, seed=3, count_power=1.0)
    b, counts_b, _ = longtail_indices(s, 1.0, None, seed=3, count_power=0.5)
    assert counts_a == [12, 6, 3] and counts_b == half
    for c in range(3):   # same seed: the smaller draw of a class is inside the larger one
        small, large = sorted((set(a[s.pool_y[a] == c].tolist()), set(b[s.pool_y[b] == c].tolist())), key=len)
        assert small <= large


def test_the_cache_is_reused_and_rebuilt_when_the_list_changes(list_root):
    list_path = list_root / "train.txt"
    first = imagelist.load(list_path, list_root, 16)
    cached = sorted((list_root / ".cache").glob("train.txt-16-*.images.npy"))
    assert len(cached) == 1
    # a cache hit: a changed image file is not decoded again
    write_image(list_root / "train/c0/img0.png", 2, 0)
    assert torch.equal(imagelist.load(list_path, list_root, 16)[0], first[0])
    # an edited list gets its own cache, built from the files
    list_path.write_text(list_path.read_text().replace("train/c0/img0.png 0", "train/c0/img0.png 2"))
    second = imagelist.load(list_path, list_root, 16)
    assert len(sorted((list_root / ".cache").glob("train.txt-16-*.images.npy"))) == 2
    # another size and a dotted list name get caches of their own, in a chosen folder
    dotted = list_root / "lt.v2.txt"
    dotted.write_text(list_path.read_text())
    imagelist.load(dotted, list_root, 8, cache_dir=list_root / "elsewhere")
    assert len(list((list_root / "elsewhere").glob("lt.v2.txt-8-*.images.npy"))) == 1
    assert not torch.equal(second[0], first[0]) and second[1][0] == 2


@pytest.mark.parametrize("line, words", [
    ("train/c0/img0.png", "expected 'relative/path label'"),
    ("train/c0/img0.png zero", "expected 'relative/path label'"),
    ("../outside.png 0", "outside the image root"),
    ("/etc/passwd 0", "outside the image root"),
    ("train/c0/missing.png 0", "does not exist"),
    ("notes.txt 0", "not a readable image"),
])
def test_bad_list_lines_name_the_file_and_line(list_root, line, words, capsys):
    (list_root / "notes.txt").write_text("not an image")
    (list_root / "train.txt").write_text("train/c0/img1.jpg 0\n" + line + "\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--smoke", "--dataset", "imagelist", "--data-root", str(list_root), "--set", "data.image_size=16"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert words in err
    assert "train.txt:2" in err


def test_smoke_trial_on_a_list_dataset_uses_the_imagenet_thresholds(list_root):
    cfg = TrialConfig.from_flat({**SMOKE, "data.dataset": "imagelist", "data.data_root": str(list_root),
                                 "data.image_size": 16, "optim.batch_size": 8})
    assert cfg.group_rule == "oltr"
    plan = plan_data(cfg)
    assert plan.class_counts == [12, 6, 3]
    result = run_trial(cfg)
    assert result.status == "ok" and result.class_counts == [12, 6, 3]
    probe = result.probes["balanced"]
    # every class has < 20 images: all are "few", none many or medium
    assert probe["few"] == pytest.approx(probe["top1"]) and probe["many"] != probe["many"]


def test_a_corrupt_cifar_file_is_a_clear_error(cifar_root, tmp_path, capsys):
    import shutil
    broken = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar_root / "cifar-10-batches-py", broken)
    (broken / "data_batch_3").write_bytes(b"\x80\x02}q\x00truncated")
    with pytest.raises(SystemExit) as exit_:
        main(["--smoke", "--dataset", "cifar10", "--data-root", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "data_batch_3" in err and "not a CIFAR python batch" in err


# ------------------------------------------------------------------ bounds on a CIFAR batch

def _shared_reference_bomb(key: bytes, fanout: int = 500, levels: int = 3) -> bytes:
    """A batch written opcode by opcode: {key: L, the other key: [0]}, L = L_levels-1 where
    L_0 = [0] * fanout and L_i+1 = [L_i] * fanout by memo reference (BINGET, 2 bytes).
    About 2 * fanout * levels bytes on disk; fanout ** levels numbers once expanded."""
    ops = [pickle.PROTO + b"\x02", pickle.EMPTY_DICT]
    other = b"labels" if key == b"data" else b"data"
    ops += [pickle.SHORT_BINSTRING + bytes([len(key)]) + key]
    for level in range(levels):
        item = pickle.BININT1 + b"\x00" if level == 0 else pickle.BINGET + bytes([level - 1])
        ops += [pickle.EMPTY_LIST, pickle.BINPUT + bytes([level]), pickle.MARK, item * fanout, pickle.APPENDS]
        ops += [pickle.POP] if level < levels - 1 else []
    ops += [pickle.SETITEM, pickle.SHORT_BINSTRING + bytes([len(other)]) + other]
    ops += [pickle.EMPTY_LIST, pickle.BININT1 + b"\x00", pickle.APPEND, pickle.SETITEM, pickle.STOP]
    return b"".join(ops)


def _refusal(path, label_key=b"labels") -> tuple[str, float, int]:
    """read_batch's refusal message, its seconds, and the peak of traced memory (numpy's
    arrays included) in bytes."""
    import time
    import tracemalloc
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError) as err:
            cifar.read_batch(path, label_key, 10)
        return str(err.value), time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("key", [b"data", b"labels"])
def test_a_shared_reference_bomb_is_refused_fast_in_bounded_memory(key, tmp_path, cifar_root):
    # 3 KB on disk, 500 ** 3 = 125 million numbers expanded: a 125 MB uint8 array (1 GB as
    # int64 labels) if anything handed it to numpy
    path = tmp_path / "data_batch_1"
    path.write_bytes(_shared_reference_bomb(key))
    assert path.stat().st_size < 4_000
    message, seconds, peak = _refusal(path)
    assert message == f"{path}: not a CIFAR python batch (refusing {key!r}: nested deeper than a batch's " \
                      "dict -> list -> number)"
    assert seconds < 1.0 and peak < 2_000_000
    # a batch in the real format still loads
    x, y = cifar.read_batch(cifar_root / "cifar-10-batches-py" / "data_batch_1", b"labels", 10)
    assert x.shape == (120, 3, 32, 32) and x.dtype == torch.uint8 and torch.equal(x[:, 0, 0, 0].long(), y)


def test_a_list_of_more_than_max_items_is_refused_while_it_is_read(tmp_path):
    # 200,000 references to one bytes object: 400 KB on disk, refused at 100,001 entries
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": [b"x"] * 200_000, b"labels": [0]}, protocol=2))
    message, seconds, peak = _refusal(path)
    assert message.endswith("not a CIFAR python batch (refusing a container of more than 100,000 items)")
    assert seconds < 5.0 and peak < 16_000_000


def test_the_unpickler_counts_the_objects_it_creates(cifar_root, monkeypatch):
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_1"
    monkeypatch.setattr(cifar, "MAX_OPS", 1000)       # the real batch takes about 1,200
    with pytest.raises(ValueError, match="refusing a batch of more than 1,000 pickle objects"):
        cifar.read_batch(batch, b"labels", 10)
    monkeypatch.setattr(cifar, "MAX_OPS", 2_000_000)
    monkeypatch.setattr(cifar, "MAX_ITEMS", 119)       # its 120 labels and file names
    with pytest.raises(ValueError, match="refusing a container of more than 119 items"):
        cifar.read_batch(batch, b"labels", 10)


def test_build_may_set_state_on_array_stand_ins_only(tmp_path):
    # BUILD on the allowed codec function would set its attributes (for every later load)
    path = tmp_path / "data_batch_1"
    state = (pickle.NONE + pickle.EMPTY_DICT + pickle.SHORT_BINUNICODE + b"\x0c__defaults__"
             + pickle.SHORT_BINUNICODE + b"\x05utf-8" + pickle.TUPLE1 + pickle.SETITEM + pickle.TUPLE2)
    path.write_bytes(b"\x80\x02" + pickle.GLOBAL + b"_codecs\nencode\n" + state + pickle.BUILD + pickle.STOP)
    with pytest.raises(ValueError, match="refusing to set state on anything but an array or dtype"):
        cifar.read_batch(path, b"labels", 10)
    assert cifar._latin1.__defaults__ == ("latin1",)


@pytest.mark.parametrize("data, labels, words", [
    ("int64", [0] * 10, "data must be a uint8 array (pixels 0..255), got int64"),
    ("int16 300", [0] * 10, "data must be a uint8 array (pixels 0..255), got int16"),
    ("bytes", [0] * 10, "data must be a uint8 array (pixels 0..255), got bytes"),
    ("uint8", [0] * 9 + [10], "labels outside 0..9 (found 0..10)"),
    ("uint8", [0] * 9 + [-1], "labels outside 0..9 (found -1..0)"),
    ("uint8", [0] * 9 + [10**30], "labels outside 0..9 (found a label of 13 digits or more)"),
    ("uint8", [0] * 9 + [1.0], "labels must be a flat list of integers"),
    ("uint8", [0] * 9 + [True], "labels must be a flat list of integers"),
])
def test_cifar_data_must_be_uint8_and_labels_in_range(data, labels, words, tmp_path):
    import numpy as np
    arrays = {"int64": np.zeros((10, 3072), dtype=np.int64), "int16 300": np.full((10, 3072), 300, dtype=np.int16),
              "bytes": bytes(10 * 3072), "uint8": np.zeros((10, 3072), dtype=np.uint8)}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": arrays[data], b"labels": labels}, protocol=2))
    with pytest.raises(ValueError) as err:
        cifar.read_batch(path, b"labels", 10)
    assert str(err.value) == f"{path}: {words}"

