"""compact(sweep) caches the per-trial journal in one file per kind; the loader uses a
compacted row only while its journal file is unchanged (analysis/compaction.py)."""

import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analysis.compaction
from analysis.report import write_report
from analysis.results import DamagedResults, compact, load_history, load_results
from study.bench_results import trial_table
from tests.analysis.test_results_checks import TOP1, _replace, _sweep
from trainables import names


@pytest.fixture
def journal_reads(monkeypatch):
    """How many journal files each load reads itself (the rest come from the compaction)."""
    counts = []
    original = analysis.compaction.read_journal

    def counting(paths, *args, **kwargs):
        counts.append(len(paths))
        return original(paths, *args, **kwargs)
    monkeypatch.setattr(analysis.compaction, "read_journal", counting)
    return counts


def _rewrite(path, **values):
    table = pq.read_table(path)
    for name, value in values.items():
        table = _replace(table, name, pa.array([value], table.schema.field(name).type))
    pq.write_table(table, path.with_name(".tmp-x.parquet"))
    os.replace(path.with_name(".tmp-x.parquet"), path)          # as the sink does: a new file


def test_compaction_loads_the_same_rows_without_reading_the_journal(tmp_path, journal_reads):
    sweep = _sweep(tmp_path)
    before, history = load_results(sweep), load_history(sweep)
    assert compact(sweep) == {"trials": 6, "history": 120}
    results = sweep / "results"
    assert (results / "trials.parquet").is_file() and not list(results.glob(".*"))
    journal_reads.clear()
    after = load_results(sweep)
    assert journal_reads == [0, 0] or journal_reads == [0]
    assert after.equals(before) and load_history(sweep).equals(history)


def test_a_resumed_sweep_adds_rewrites_and_orphans_rows_after_a_compaction(tmp_path, journal_reads):
    sweep = _sweep(tmp_path)
    compact(sweep)
    trials = sweep / "results" / "trials"
    pq.write_table(trial_table(1, start=6), trials / "t000006.parquet")                  # a new trial
    _rewrite(trials / "t000001.parquet", **{TOP1: 0.123})                                # rewritten
    (trials / "t000002.parquet").rename(tmp_path / "orphaned.parquet")                   # moved away
    journal_reads.clear()
    df = load_results(sweep).set_index("trial_id")
    assert journal_reads == [2]                                        # the new and the rewritten file
    assert sorted(df.index) == ["t000000", "t000001", "t000003", "t000004", "t000005", "t000006"]
    assert df.loc["t000001", TOP1] == 0.123
    assert compact(sweep)["trials"] == 6                              # the new compaction takes them in
    journal_reads.clear()
    again = load_results(sweep).set_index("trial_id")
    assert journal_reads == [0] and again.equals(df)


def test_a_compacted_file_without_its_journal_is_read_alone_and_a_damaged_one_is_bypassed(tmp_path):
    sweep = _sweep(tmp_path)
    compact(sweep)
    whole = load_results(sweep)
    compacted = sweep / "results" / "trials.parquet"
    compacted.write_bytes(compacted.read_bytes()[:500])
    with pytest.warns(UserWarning, match="reading the per-trial files instead"):
        assert load_results(sweep).equals(whole)
    assert compact(sweep)["trials"] == 6 and load_results(sweep).equals(whole)    # rebuilt
    for f in (sweep / "results" / "trials").iterdir():                            # shipped alone
        f.unlink()
    (sweep / "results" / "trials").rmdir()
    assert load_results(sweep).equals(whole)
    compacted.write_bytes(compacted.read_bytes()[:500])
    with pytest.raises(DamagedResults, match="trials.parquet: damaged"):
        load_results(sweep)


def test_compaction_refuses_a_damaged_journal_file_and_keeps_the_old_compaction(tmp_path):
    sweep = _sweep(tmp_path)
    compact(sweep)
    old = (sweep / "results" / "trials.parquet").read_bytes()
    victim = sweep / "results" / "trials" / "t000004.parquet"
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(DamagedResults, match="t000004.parquet: damaged results file"):
        compact(sweep)
    assert (sweep / "results" / "trials.parquet").read_bytes() == old


HOSTILE = "boom | `rm -rf /` <script>alert(1)</script>\n# not a heading ![x](http://example.com/t.png) & more"


def test_text_from_rows_is_escaped_in_the_report(tmp_path):
    sweep = _sweep(tmp_path, n=30)
    victim = sweep / "results" / "trials" / "t000000.parquet"
    _rewrite(victim, **{names.STATUS: "error", "error": HOSTILE, "sweep": "a|b<i>"})
    text = write_report(sweep, tmp_path / "report").read_text()
    assert "<script" not in text and "<i>" not in text and "\n# not a heading" not in text
    assert "http://example.com" in text and not re.search(r"(?<!\\)\]\(http", text)     # no link, no image
    line = next(l for l in text.splitlines() if l.startswith("| t000000 |"))
    # one row of three cells: every pipe of the error is escaped, and so are its backticks and brackets
    assert len(re.findall(r"(?<!\\)\|", line)) == 4
    assert "boom \\| \\`rm -rf /\\` &lt;script>alert(1)&lt;/script> # not a heading !\\[x\\]" in line
    assert "Sweeps: a\\|b&lt;i>, bench." in text
