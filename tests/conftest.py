"""Test-session set-up and the fixtures shared by every package's tests (plain helpers
live in tests/fixtures.py).

Ray starts once per session (a real local cluster, 2 CPUs, its own short temp
dir); tests that need it take the `ray_cluster` fixture.
"""

import os
import pickle
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from fixtures import COUNTS, write_image

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")    # Ray on 127.0.0.1 only (study.runner)
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# Fault injection (trainables.faults): the rules file's path must be in the
# environment before Ray starts, so that every worker inherits it; the `faults`
# fixture writes the rules for one test and removes them after it.
FAULTS_FILE = os.path.join(tempfile.mkdtemp(prefix="faults"), "rules.json")
os.environ["STUDY_FAULTS"] = FAULTS_FILE


@pytest.fixture()
def faults():
    """faults(rules): arm trainables.faults for this test (see its docstring)."""
    import glob
    import json

    def arm(rules: list[dict]) -> None:
        with open(FAULTS_FILE, "w") as f:
            json.dump(rules, f)
    yield arm
    for path in [FAULTS_FILE, *glob.glob(FAULTS_FILE + ".fired.*")]:
        os.remove(path) if os.path.exists(path) else None


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    # A short path: Ray's unix sockets live under it and must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """One default `python -m study.sweep kpcl --smoke --name smoke` as a user runs it: its own
    process and local Ray, without the test session's RAY_AUTH_MODE and Tune logger settings.
    Its stores (runs/mlflow.db, runs/optuna.db) and rows serve every test that reads a
    finished sweep; those tests only read them (the browser test adds a shared view of the
    runs table to the experiment, as the UI's Share button would).
    Returns (exit status, storage folder, stdout, stderr)."""
    storage = tmp_path_factory.mktemp("smoke") / "runs"
    test_only = ("RAY_AUTH_MODE", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    env = {k: v for k, v in os.environ.items() if k not in test_only}
    proc = subprocess.run([sys.executable, "-m", "study.sweep", "kpcl", "--smoke", "--storage", str(storage),
                           "--name", "smoke"], env=env, capture_output=True, text=True, timeout=600,
                          cwd=storage.parent)
    return proc.returncode, storage, proc.stdout, proc.stderr


# ------------------------------------------------ small datasets in the exact on-disk formats

def _write_batch(path, data, labels, label_key):
    entry = {b"batch_label": b"test batch", label_key: labels.tolist(), b"data": data,
             b"filenames": [f"img{i}.png".encode() for i in range(len(labels))]}
    if label_key == b"fine_labels":
        entry[b"coarse_labels"] = (labels // 5).tolist()
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def _images(labels, rng):
    """[N, 3072] uint8 rows whose first byte encodes the label, the rest random."""
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    data[:, 0] = labels                 # R plane, first pixel
    data[:, 1024] = 255 - labels        # G plane, first pixel: a wrong channel layout shows
    return data


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory):
    """CIFAR-10 (60 train / 10 test per class, 5 train batches) and CIFAR-100 (6 / 2 per class)."""
    root, rng = tmp_path_factory.mktemp("cifar"), np.random.default_rng(0)
    c10 = root / "cifar-10-batches-py"
    c10.mkdir()
    train = rng.permutation(np.repeat(np.arange(10), 60))
    for i, part in enumerate(np.split(train, 5), start=1):
        _write_batch(c10 / f"data_batch_{i}", _images(part, rng), part, b"labels")
    test = np.repeat(np.arange(10), 10)
    _write_batch(c10 / "test_batch", _images(test, rng), test, b"labels")
    c100 = root / "cifar-100-python"
    c100.mkdir()
    for name, per in (("train", 6), ("test", 2)):
        labels = rng.permutation(np.repeat(np.arange(100), per))
        _write_batch(c100 / name, _images(labels, rng), labels, b"fine_labels")
    return root


@pytest.fixture()
def list_root(tmp_path):
    lines = {"train": [], "val": [], "test": []}
    for split, counts in (("train", COUNTS), ("val", {0: 2, 1: 2, 2: 2}), ("test", {0: 3, 1: 3, 2: 3})):
        for label, n in counts.items():
            for i in range(n):
                ext = "jpg" if i % 2 else "png"
                rel = f"{split}/c{label}/img{i}.{ext}"
                write_image(tmp_path / rel, label, i)
                lines[split].append(f"{rel} {label}")
    for split, rows in lines.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return tmp_path


