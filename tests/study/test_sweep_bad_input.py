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
    (["kpcl", "--scheduler", "asha"], "asha"),
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
    (["kpcl", "--set", "optim.lr"], "KEY=VALUE"),
    (["select", "--smoke", "--set", "select.budgets=10,100000"], "more than the"),
    (["select", "--set", "select.budgets=ten"], "select.budgets"),
    (["select", "--set", "select.delta=0.5"], "set per trial by this study"),
    (["select", "--set", "select.strategies=random,oracle"], "select.strategies"),
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
