"""The Parquet sink on a real trial result, without Ray."""

import math

import pytest

from analysis.results import load_history, load_results
from study.parquet_sink import ParquetSink
from trainables.config import TrialConfig
from trainables.presets import SMOKE
from trainables.trial import run_trial

PROVENANCE = {"study": "kpcl", "sweep": "t", "git_commit": "abc", "versions": {"torch": "x"}}


@pytest.fixture(scope="module")
def result():
    return run_trial(TrialConfig.from_flat({**SMOKE, "loss.name": "kcl", "seed": 3})).to_dict()


def test_a_row_holds_the_trial_result_and_reads_back_with_real_types(tmp_path, result):
    sink = ParquetSink(tmp_path / "results", PROVENANCE)
    sink.write("t1", result["config"], result)
    df = load_results(tmp_path)
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "ok" and row["seed"] == 3 and row["loss.k"] == 6
    assert row["loss.queue_size"] is None or math.isnan(row["loss.queue_size"])   # inactive key: null
    assert list(row["lt/per_class_acc"]) == result["probes"]["lt"]["per_class_acc"]
    assert list(row["class_counts"]) == result["class_counts"]
    assert row["lt/balancedness"] == result["probes"]["lt"]["balancedness"]
    assert row["git_commit"] == "abc" and row["sweep"] == "t"
    history = load_history(tmp_path)
    assert history["epoch"].tolist() == [1, 2] and (history["trial_id"] == "t1").all()


def test_writing_a_trial_again_replaces_its_row(tmp_path, result):
    sink = ParquetSink(tmp_path / "results", PROVENANCE)
    sink.write("t1", result["config"], None, "error", "first attempt failed")
    sink.write("t1", result["config"], result)
    df = load_results(tmp_path)
    assert len(df) == 1 and df.iloc[0]["status"] == "ok"


def test_a_leftover_temporary_file_is_reported_and_not_read(tmp_path, result):
    sink = ParquetSink(tmp_path / "results", PROVENANCE)
    sink.write("t1", result["config"], result)
    (tmp_path / "results" / "trials" / ".tmp-crashed.parquet").write_bytes(b"PAR1 torn")
    with pytest.warns(UserWarning, match="unfinished write"):
        assert len(load_results(tmp_path)) == 1


def test_an_error_row_keeps_whatever_config_it_can(tmp_path):
    sink = ParquetSink(tmp_path / "results", PROVENANCE)
    sink.write("bad", {"loss.name": "kcl", "loss.temperature": "hot", "seed": 1}, None, "error", "ValueError: x")
    row = load_results(tmp_path).iloc[0]
    assert row["status"] == "error" and row["error"] == "ValueError: x"
    assert row["loss.name"] == "kcl" and row["seed"] == 1
    assert math.isnan(row["loss.temperature"]) and math.isnan(row["lt/top1"])
