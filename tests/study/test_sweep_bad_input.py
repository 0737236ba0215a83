"""Every bad input exits 2 with a one-line message, before Ray starts and without writing."""

import socket

import pytest

import study.runner
from study.sweep import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
]


@pytest.mark.parametrize("argv, words", BAD, ids=[" ".join(a) or "no-study" for a, _ in BAD])
def test_bad_input_exits_2_before_ray_and_writes_nothing(argv, words, tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the sweep started on bad input")

    monkeypatch.setattr(study.runner, "run_sweep", never)
    storage = tmp_path / "runs"
    argv = [a.replace("PORT", str(_free_port())) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--storage", str(storage)])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err.strip().splitlines()[-1]
    assert not storage.exists()


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
