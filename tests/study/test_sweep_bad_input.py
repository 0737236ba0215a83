"""Every bad input exits 2 with a one-line message, before Ray starts and without writing."""

import os

import pytest
from fixtures import free_port

import study.runner
import study.runner as study_runner
from study.sweep import main

BAD = [
    (["nope"], "unknown study"),
    ([], "name a study"),
    (["kpcl", "--scheduler", "asha"], "with --objective multi use --scheduler moasha"),
    (["kpcl", "--scheduler", "moasha", "--imbalance-range", "1:10"], "use --imbalance-levels"),
    (["select", "--scheduler", "moasha"], "objectives are its own"),
    (["fig2", "--scheduler", "moasha"], "fig2 is a grid"),
    (["kpcl", "--smoke", "--scheduler", "moasha", "--set", "data.val_per_class=0"],
     "ranks trials on the validation set"),
    (["kpcl", "--imbalance-levels", "0.5,10"], ">= 1"),
    (["kpcl", "--imbalance-levels", "1,ten"], "expected numbers"),
    (["kpcl", "--imbalance-range", "100:10"], "LOW < HIGH"),
    (["kpcl", "--imbalance-range", "1:100", "--imbalance-levels", "1,10"], "exclude each other"),
    (["kpcl", "--num-samples", "0"], "--num-samples"),
    (["kpcl", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["kpcl", "--dataset", "mnist"], "data.dataset"),
    (["kpcl", "--set", "loss.temperature=-1"], "loss.temperature"),
    (["kpcl", "--set", "loss.kk=1"], "loss.kk"),
    (["kpcl", "--smoke", "--imbalance-levels", "1,1000"], "no images"),
    (["fig2", "--imbalance-range", "1:10"], "grid"),
    (["kpcl", "--confirm", "1"], "an interval needs two"),
    (["kpcl", "--confirm", "-2"], "at least 2"),
    (["fig2", "--confirm", "3"], "every configuration runs with every seed"),
    (["fig2", "--set", "loss.clusters=5000"], "more clusters than the"),
    (["pkcl", "--epochs", "8"], "below optim.epochs=8 for pkcl"),
    (["select", "--set", "data.total=45", "--set", "loss.k=2", "--set", "select.budgets=5,10"], "loss.clusters=50: more clusters"),
    (["fig2", "--epochs", "8"], "below optim.epochs=8 for pkcl"),
    (["fig2", "--set", "loss.cluster_method=spectral"], "one of ('kmeans', 'sinkhorn')"),
    (["kpcl", "--address", "127.0.0.1:PORT"], "cannot reach"),
    (["kpcl", "--address", "nohostport"], "HOST:PORT"),
    (["kpcl", "--resume", "never-ran"], "no sweep of that name"),
    (["kpcl", "--epochs", "two"], "invalid int"),
    (["kpcl", "--dataset", "imagelist", "--data-root", "/nonexistent"], "takes its imbalance from its list"),
    (["kpcl", "--dataset", "cifar10", "--data-root", "/nonexistent", "--imbalance-levels", "10"],
     "cifar-10-batches-py"),
    (["fig2", "--smoke", "--set", "loss.k=500"], "KCL would equal SupCon"),
    (["kpcl", "--set", "loss.k=3"], "set per trial by this study"),
    (["kpcl", "--set", "loss.name=supcon"], "set per trial by this study"),
    (["fig2", "--set", "data.imbalance_ratio=50"], "set per trial by this study"),
    (["kpcl", "--name", "it's"], "--name"),
    (["kpcl", "--set", "eval.sigma=0"], "eval.sigma"),
    (["kpcl", "--set", "eval.sigma=-0.5"], "eval.sigma"),
    (["kpcl", "--gpus-per-trial", "1.5"], "--gpus-per-trial"),
    (["kpcl", "--max-failures", "-1"], "--max-failures"),
    (["kpcl", "--trial-resource", "worker"], "NAME=AMOUNT"),
    (["kpcl", "--trial-resource", "worker=-1"], "AMOUNT > 0"),
    (["kpcl", "--trial-resource", "CPU=2"], "CPUs and GPUs have their own flags"),
    (["kpcl", "--smoke", "--address", "127.0.0.1:PORT", "--dataset", "cifar10", "--data-root", "/nonexistent"],
     "cannot reach"),          # --address: the data is a worker's business, the address is checked first
    (["kpcl", "--set", "optim.lr"], "KEY=VALUE"),
    (["select", "--smoke", "--set", "select.budgets=10,100000"], "more than the"),
    (["select", "--set", "select.budgets=ten"], "select.budgets"),
    (["select", "--set", "select.delta=0.5"], "set per trial by this study"),
    (["select", "--set", "select.strategies=random,oracle"], "select.strategies"),
    (["kpcl", "--set", "device=gpu"], "device='gpu' is invalid: allowed 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (["kpcl", "--set", "device=cuda:x"], "device='cuda:x' is invalid"),
    (["kpcl", "--set", "device=cuda:-1"], "device='cuda:-1' is invalid"),
    (["kpcl", "--set", "device=mps"], "device='mps' is invalid"),
    (["kpcl", "--set", "optim.lr=1e308"], "optim.lr=1e+308 is invalid: allowed > 0 and <= 10"),
    (["kpcl", "--set", "model.width=100000"], "model.width=100000 is invalid: allowed >= 1 and <= 512 or None"),
    (["kpcl", "--set", "optim.batch_size=1000000"], "optim.batch_size=1000000 is invalid: allowed >= 2 and <= 8192"),
    (["kpcl", "--set", "optim.epochs=100000"], "optim.epochs=100000 is invalid: allowed >= 0 and <= 5000"),
    (["kpcl", "--set", "probe.epochs=1e9"], "probe.epochs=1000000000 is invalid: allowed >= 1 and <= 5000"),
    (["kpcl", "--set", "data.image_size=100000"], "data.image_size=100000 is invalid: allowed >= 8 and <= 512"),
    (["kpcl", "--set", "eval.knn_k=1000000"], "eval.knn_k=1000000 is invalid: allowed >= 1 and <= 1000"),
    (["kpcl", "--set", "data.data_seed=-5"], "data.data_seed=-5 is invalid: allowed >= 0"),
    (["kpcl", "--set", "eval.sigma=NaN"], "eval.sigma=nan is invalid: allowed a finite number"),
    (["kpcl", "--set", "eval.sigma=Infinity"], "eval.sigma=inf is invalid: allowed a finite number"),
    (["kpcl", "--set", "eval.sigma=nan"], "eval.sigma='nan' is invalid: allowed a finite number"),
    (["kpcl", "--set", "optim.lr=-Infinity"], "optim.lr=-inf is invalid: allowed a finite number"),
    (["kpcl", "--set", "optim.lr=1" + "0" * 400], "optim.lr=100000000000000000...0000000000000000000 is invalid"),
    (["kpcl", "--seed", "-1"], "--seed -1: must be in [0, 4294967295]"),
    (["kpcl", "--seed", str(2**32)], "--seed 4294967296: must be in [0, 4294967295]"),
    (["select", "--smoke", "--seed", str(2**32 - 2)], "later trials would use seeds above 4294967295"),
    (["kpcl", "--name", "n" * 300], "--name: 300 characters, more than the 255 this file system allows"),
    (["kpcl", "--imbalance-levels", "1,10,1"], "1 given more than once"),
    (["kpcl", "--imbalance-levels", "1,inf"], "finite"),
    (["kpcl", "--cpus-per-trial", "1000"], "--cpus-per-trial 1000: this machine has"),
    (["kpcl", "--cpus-per-trial", "nan"], "--cpus-per-trial=nan: must be > 0 and finite"),
    (["kpcl", "--gpus-per-trial", "nan"], "--gpus-per-trial=nan: must be a finite number"),
    (["kpcl", "--gpus-per-trial", "2"], "--gpus-per-trial 2: this machine has no GPUs"),
    (["kpcl", "--optuna-storage", "http://127.0.0.1:5000"], "expected sqlite:///PATH (a file), or a postgresql"),
    (["kpcl", "--optuna-storage", "sqlite:///same.db", "--mlflow-uri", "sqlite:///same.db"],
     "the MLflow store's database too"),
    (["kpcl", "--optuna-storage", "sqlite:///"], "--optuna-storage sqlite:///: expected sqlite:///PATH"),
    (["kpcl", "--optuna-storage", "postgresql://u:p@127.0.0.1:PORT/studies"],
     "--optuna-storage: cannot reach the database at 127.0.0.1"),
]


@pytest.mark.parametrize("argv, words", BAD, ids=[" ".join(a) or "no-study" for a, _ in BAD])
def test_bad_input_exits_2_before_ray_and_writes_nothing(argv, words, tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the sweep started on bad input")

    monkeypatch.setattr(study.runner, "run_sweep", never)
    storage = tmp_path / "runs"
    argv = [a.replace("PORT", str(free_port())) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--storage", str(storage)])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err.strip().splitlines()[-1]
    assert not storage.exists()


def test_an_optuna_storage_that_is_another_database_or_holds_the_sweeps_studies_is_refused(
        tmp_path, capsys, monkeypatch):
    import sqlite3

    import optuna
    monkeypatch.setattr(study.runner, "run_sweep", lambda *a, **k: pytest.fail("the sweep started"))
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("create table things (x)")
    taken = tmp_path / "runs" / "optuna.db"
    taken.parent.mkdir()
    optuna.create_study(study_name="taken:ratio=10", storage=f"sqlite:///{taken}").ask()
    for argv, words in [(["--optuna-storage", f"sqlite:///{other}"], "not an Optuna storage (no studies table)"),
                        (["--name", "taken"], "already holds study taken:ratio=10 with 1 trial(s); continue that sweep "
                                              "with --resume taken")]:
        with pytest.raises(SystemExit) as exit_:
            main(["kpcl", "--smoke", *argv, "--storage", str(tmp_path / "runs")])
        assert exit_.value.code == 2
        assert words in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "runs" / "taken").exists()


def _imagelist(root, train_lines):
    """A list-file dataset whose train list is `train_lines` (val and test lists valid)."""
    from fixtures import write_image
    for split in ("val", "test"):
        rows = []
        for label in range(3):
            write_image(root / split / f"{label}.png", label, label)
            rows.append(f"{split}/{label}.png {label}")
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    write_image(root / "train" / "ok.png", 0, 0)
    (root / "train.txt").write_text("\n".join(train_lines) + "\n")
    return ["kpcl", "--smoke", "--dataset", "imagelist", "--data-root", str(root), "--imbalance-levels", "1"]


def _cifar(root, payload: bytes):
    """CIFAR-10's folder with a data_batch_1 holding `payload`."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (folder / name).write_bytes(payload)
    return ["kpcl", "--smoke", "--dataset", "cifar10", "--data-root", str(root), "--imbalance-levels", "10"]


class _Shell:
    """Pickles to a call of os.system: what an unsafe unpickler would run."""
    def __reduce__(self):
        import os
        return os.system, ("touch /tmp/pwned-by-cifar",)


def _pickled(obj) -> bytes:
    import pickle
    return pickle.dumps(obj, protocol=2)


BAD_DATA = {
    "list line without a label": (lambda r: _imagelist(r, ["train/ok.png"]), "expected 'relative/path label'"),
    "list label not a number": (lambda r: _imagelist(r, ["train/ok.png cat"]), "expected 'relative/path label'"),
    "list path outside the image root": (lambda r: _imagelist(r, ["train/ok.png 0", "../../etc/passwd 1"]),
                                         "outside the image root"),
    "list absolute path": (lambda r: _imagelist(r, ["/etc/passwd 0"]), "outside the image root"),
    "list image missing": (lambda r: _imagelist(r, ["train/ok.png 0", "train/gone.png 1"]), "does not exist"),
    "list file not an image": (lambda r: (r / "train").mkdir(parents=True) or (r / "train" / "x.png").write_text(
        "not an image") and _imagelist(r, ["train/x.png 0"]), "not a readable image"),
    "list empty": (lambda r: _imagelist(r, ["", "  "]), "no images listed"),
    "cifar batch truncated": (lambda r: _cifar(r, _pickled({b"data": b"", b"labels": []})[:20]),
                              "not a CIFAR python batch"),
    "cifar batch runs code when unpickled": (lambda r: _cifar(r, _pickled({b"data": _Shell(), b"labels": [0]})),
                                             "refusing"),
    "cifar folder empty": (lambda r: (r / "cifar-10-batches-py").mkdir(parents=True) or
                           ["kpcl", "--smoke", "--dataset", "cifar10", "--data-root", str(r)], "missing data_batch_1"),
    # (helpers _big_image, _nested and _batch are at the end of this file)
    "list train with one class": (lambda r: _imagelist(r, ["train/ok.png 0", "train/ok.png 0"]),
                                  "train.txt: the train list has one class (0)"),
    "list val label no train image has": (lambda r: _imagelist(r, ["train/ok.png 0", "train/ok.png 1"]),
                                          "val.txt: label 2 has no train image"),
    "list train classes not dense": (lambda r: _imagelist(r, ["train/ok.png 0", "train/ok.png 2"]),
                                     "1 of 0..2 have no image (first: [1])"),
    "list label 10**12": (lambda r: _imagelist(r, ["train/ok.png 0", "train/ok.png 1000000000000"]),
                          "train.txt:2: label 1000000000000 is over the limit: labels are 0..99,999"),
    "list label 3,000,000": (lambda r: _imagelist(r, ["train/ok.png 0", "train/ok.png 3000000"]),
                             "train.txt:2: label 3000000 is over the limit: labels are 0..99,999"),
    "list image over the pixel limit": (lambda r: _big_image(r, 8000, 8000),
                                        "big.ppm: 8000x8000 is over the limit of 50,000,000 pixels per image"),
    "list image PIL calls a bomb": (lambda r: _big_image(r, 20000, 20000),
                                    "big.ppm: over the limit of 50,000,000 pixels per image"),
    "cifar data not uint8": (lambda r: _cifar(r, _batch("int64", 0)), "data must be a uint8 array (pixels 0..255), "
                                                                       "got int64"),
    "cifar data over 255": (lambda r: _cifar(r, _batch("int16", 300)), "data must be a uint8 array (pixels 0..255), "
                                                                        "got int16"),
    "cifar label out of range": (lambda r: _cifar(r, _batch("uint8", 0, label=10**30)),
                                 "labels outside 0..9 (found a label of 13 digits or more)"),
    "cifar shared-reference bomb": (lambda r: _cifar(r, _pickled({b"data": _nested(500, 3), b"labels": [0]})),
                                    "refusing b'data': nested deeper than a batch's dict -> list -> number"),
    "cifar list of 200,000 references": (lambda r: _cifar(r, _pickled({b"data": [b"x"] * 200_000, b"labels": [0]})),
                                         "refusing a container of more than 100,000 items"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_exits_2_before_ray_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    make, words = BAD_DATA[case]
    monkeypatch.setattr(study.runner, "run_sweep", lambda *a, **k: pytest.fail("the sweep started on bad data"))
    argv = make(tmp_path / "data")
    storage = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--storage", str(storage)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and words in err[-1], err[-1]
    assert not storage.exists()
    assert not os.path.exists("/tmp/pwned-by-cifar")


def test_unwritable_storage_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        main(["kpcl", "--storage", str(blocker / "runs")])
    assert exit_.value.code == 2 and "--storage" in capsys.readouterr().err


@pytest.mark.parametrize("make, words", [
    (lambda t: (t / "loop").symlink_to(t / "loop") or t / "loop" / "runs", "cannot be resolved"),
    (lambda t: "/proc/1/nowhere/runs", "cannot write there"),
], ids=["symlink loop", "cannot be created"])
def test_a_storage_that_cannot_be_made_is_refused_and_nothing_is_left(make, words, tmp_path, capsys):
    storage = make(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["kpcl", "--smoke", "--storage", str(storage)])
    assert exit_.value.code == 2 and words in capsys.readouterr().err.strip().splitlines()[-1]
    assert not os.path.exists("/proc/1/nowhere")


def test_a_storage_another_sweep_creates_at_the_same_moment_is_taken(tmp_path, monkeypatch):
    # Sweeps started together into one new folder: another driver's mkdir lands between
    # this one's look and its own mkdir (injected), which then finds the folder there.
    from pathlib import Path

    from study.checks import create_storage
    real_mkdir = Path.mkdir

    def raced(self, *args, **kwargs):
        real_mkdir(self)                                    # the other driver, first
        return real_mkdir(self, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", raced)
    create_storage(tmp_path / "fresh" / "runs")
    monkeypatch.undo()
    assert (tmp_path / "fresh" / "runs").is_dir() and not any((tmp_path / "fresh" / "runs").iterdir())


def test_list_shows_every_study(capsys):
    from study.studies import STUDIES
    assert main(["--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(STUDIES)


@pytest.mark.parametrize("study", ["ce", "cl", "supcon"])
def test_small_classes_are_fine_for_losses_without_k(study, tmp_path, monkeypatch):
    # the KCL k check applies to studies that train KCL, not to every study
    monkeypatch.setattr(study_runner, "run_sweep", lambda *a, **k: 0)
    argv = [study, "--smoke", "--set", "data.train_per_class=6", "--imbalance-levels", "1",
            "--storage", str(tmp_path)]
    assert main(argv) == 0


@pytest.mark.parametrize("sets, limit", [([], 118), (["--set", "optim.batch_size=16"], 30)],
                         ids=["class-bound", "batch-bound"])
def test_a_fixed_kcl_k_is_refused_from_2m_minus_2_on(sets, limit, tmp_path, monkeypatch, capsys):
    # fig2 --smoke: the largest class has n = 60 train images (smoke pool, no fixed total).
    # With batch 64, m = min(60, 64) = 60: k = 2m - 2 = 118 already takes every same-label
    # row (KCL == SupCon, test_losses); with batch 16 an anchor shares its batch with at
    # most 15 of its class, m = 16, and the bound is 30.
    planned = []
    monkeypatch.setattr(study.runner, "run_sweep", lambda plan, *args: planned.append(plan) or 0)
    argv = ["fig2", "--smoke", *sets, "--storage", str(tmp_path)]
    assert main([*argv, "--set", f"loss.k={limit - 1}", "--name", "below"]) == 0
    assert planned[0].base["loss.k"] == limit - 1
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--set", f"loss.k={limit}", "--name", "at"])
    assert exit_.value.code == 2 and f"pick k < {limit}" in capsys.readouterr().err


# ------------------------------------------------------------ helpers of BAD_DATA's later entries

def _big_image(root, width, height):
    """A list dataset whose train list names a PPM declaring width x height pixels (its
    header only: PIL reads the size without the pixels)."""
    argv = _imagelist(root, ["train/ok.png 0", "train/big.ppm 1", "train/ok.png 2"])
    (root / "train" / "big.ppm").write_bytes(f"P6\n{width} {height}\n255\n".encode() + bytes(64))
    return argv


def _nested(fanout: int, levels: int) -> list:
    """[[...[0] * fanout...] * fanout] * fanout: one list per level, pickled as memo references
    (a few KB), fanout ** levels numbers once expanded."""
    value = [0] * fanout
    for _ in range(levels - 1):
        value = [value] * fanout
    return value


def _batch(dtype: str, fill: int, label: int = 0) -> bytes:
    """A CIFAR-10 batch of 10 images of `dtype` holding `fill`, the last label `label`."""
    import numpy as np
    return _pickled({b"data": np.full((10, 3072), fill, dtype=dtype), b"labels": [0] * 9 + [label]})


@pytest.mark.parametrize("case", [c for c in BAD_DATA if c.startswith("list")])
def test_a_refused_list_dataset_leaves_no_decode_cache(case, tmp_path, monkeypatch):
    import time
    monkeypatch.setattr(study.runner, "run_sweep", lambda *a, **k: pytest.fail("the sweep started on bad data"))
    argv = BAD_DATA[case][0](tmp_path / "data")
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--storage", str(tmp_path / "runs")])
    assert exit_.value.code == 2 and time.perf_counter() - start < 5.0
    assert not (tmp_path / "data" / ".cache").exists()
    assert [p for p in tmp_path.rglob("*") if p.suffix == ".npy" or p.name.startswith(".tmp-")] == []


def test_the_worker_side_data_check_also_refuses_a_scheduler_without_a_validation_set(ray_cluster, cifar_root):
    # With --address and a data root only the workers have, validation checks the data
    # there (study.cluster._check_data, run here in-process as the task would run it)
    from study.cluster import _check_data
    from trainables.presets import SMOKE
    base = {**SMOKE, "data.dataset": "cifar10", "data.data_root": str(cifar_root), "data.val_per_class": 0,
            "data.total": None}
    _, ok = _check_data("kpcl", base, [2.0], 0, "none")
    _, refused = _check_data("kpcl", base, [2.0], 0, "moasha")
    _, held_out = _check_data("kpcl", {**base, "data.val_per_class": 2}, [2.0], 0, "moasha")
    assert ok is None and held_out is None
    assert "--scheduler moasha ranks trials on the validation set" in refused


def test_a_resume_is_refused_where_the_studys_cells_changed_since_the_sweep_started():
    from study.plan import SweepPlan, _check_same_cells
    from study.studies import STUDIES
    select = STUDIES["select"]
    old = SweepPlan(study="select", name="s", storage="/x", base={}, levels=[1.0, 10.0, 100.0], num_samples=18,
                    cells=[{"loss.name": "simclr"}, {"loss.name": "ce"}, {"loss.name": "kcl"}])
    with pytest.raises(ValueError, match="cells changed since this sweep started"):
        _check_same_cells(old, select, "s")
    # an older sweep.json without cells: its 18 trials are no multiple of 3 levels x 5 cells
    with pytest.raises(ValueError, match="cells changed"):
        _check_same_cells(SweepPlan(**{**old.__dict__, "cells": None}), select, "s")
    _check_same_cells(SweepPlan(**{**old.__dict__, "cells": select.cell_configs(), "num_samples": 30}), select, "s")
