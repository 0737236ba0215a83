"""trainables/names.py owns every result name: its rule for final metrics, its inverse
from a Parquet row, and a scan that no other module spells a metric name itself."""

import ast
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainables import names

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "trainables", "analysis", "search_spaces")
# "lt/...", "balanced/...", "select/...", "pretrain/...", ".../class_acc/..."
COMPOSITE = re.compile(r"(?<![\w.])(lt|balanced|select|pretrain)/|class_acc/")


def _result(selection=()) -> dict:
    """A TrialResult dict with hand-picked numbers: 3 classes, the few group empty (NaN)."""
    probe = {"top1": 0.5, "many": 0.8, "medium": 0.4, "few": math.nan, "balancedness": 0.7, "acc_std": 0.2,
             "worst_class_acc": 0.3, "per_class_acc": [0.8, 0.4, 0.3]}
    pretrain = {"epochs_completed": 2, "final_loss": 1.5, "final_knn_acc": 0.25, "mean_positives": None,
                "images_per_s": 100.0, "resumed_from_epoch": 0, "train_seconds": 3.0, "parameters": 1000,
                "compiled": False}
    return {"status": "ok", "probes": {"lt": probe, "balanced": dict(probe, top1=0.6)}, "pretrain": pretrain,
            "selection": list(selection), "wall_time_s": 9.0}


SELECTION = [{"strategy": "random", "budget": b, "classes_covered": c, "imbalance": 2.0, "entropy": e,
              "top1": t, "balancedness": 0.9, "worst_class_acc": 0.1, "per_class_acc": [0.1, 0.2, 0.3]}
             for b, c, e, t in ((10, 2, 0.4, 0.3), (20, 3, 0.8, 0.5))]


def test_final_metrics_by_hand():
    m = names.final_metrics(_result(SELECTION))
    assert m["lt/top1"] == 0.5 and m["balanced/top1"] == 0.6 and "lt/few" not in m     # NaN: absent
    assert [m[f"lt/class_acc/{c:03d}"] for c in range(3)] == [0.8, 0.4, 0.3] and "lt/class_acc/003" not in m
    assert m["select/random/20/classes_covered"] == 3 and m["select/random/10/entropy"] == 0.4
    assert m["select/random/top1"] == pytest.approx(0.4) and m["select/random/entropy"] == pytest.approx(0.6)
    assert m["pretrain/final_loss"] == 1.5 and "pretrain/mean_positives" not in m          # None: absent
    assert "pretrain/compiled" not in m and m["wall_time_s"] == 9.0
    # 6 scalars + 3 classes per probe, 2 x 6 selection measures + 2 means, 7 pretrain values, wall time
    assert len(m) == 2 * (6 + 3) + 12 + 2 + 7 + 1


def test_the_parquet_row_reads_back_to_the_same_metrics():
    from study.records import results_schema, trial_row
    result = {**_result(SELECTION), "device": "cpu", "num_classes": 3, "class_counts": [5, 3, 1],
              "class_order": [0, 1, 2]}
    provenance = {"study": "select", "sweep": "s", "git_commit": "abc", "versions": {}}
    row = trial_row("t1", {"loss.name": "kcl"}, result, provenance)
    stored = {k: row.get(k) for k in results_schema().names}     # what the Parquet file keeps
    assert names.row_metrics(stored, SELECTION) == pytest.approx(names.final_metrics(result))


def test_unknown_names_are_refused():
    with pytest.raises(KeyError, match="top_1"):
        names.probe_metric("lt", "top_1")
    with pytest.raises(KeyError, match="knn"):
        names.epoch_record(1, knn=0.5)
    assert names.epoch_record(3, loss=1.0, mean_positives=None) == {"epoch": 3, "loss": 1.0}
    assert names.probe_of("balanced/acc_cv") == "balanced" and names.probe_of("select/spread/top1") is None


def _strings(tree: ast.AST):
    """String constants that are not docstrings, with f-strings' literal parts."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


# Every metric word, but for the epoch metrics "loss" and "lr" and the pretraining
# summary's "train_seconds", which are also ordinary words and checkpoint fields
# (their result keys are built by names.epoch_record and names.pretrain_record).
WORDS = ({*names.PROBES, *names.PROBE_METRICS, names.PER_CLASS, *names.DERIVED_PROBE_METRICS,
          *names.SELECTION_MEASURES, *names.EPOCH_METRICS, *names.EPOCH_LISTS, *names.PRETRAIN_SUMMARY, names.WALL_TIME}
         - {"loss", "lr", "train_seconds"})


def test_no_module_but_names_spells_a_metric_name():
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "names.py" and path.parent.name == "trainables":
                continue
            found += [f"{path.relative_to(ROOT)}:{line}: {text!r}"
                      for line, text in _strings(ast.parse(path.read_text()))
                      if COMPOSITE.search(text) or text in WORDS]
    assert not found, "\n".join(found)
    assert COMPOSITE.search("lt/top1") and COMPOSITE.search("/class_acc/") and not COMPOSITE.search("loss.k")
    assert {"top1", "lt", "entropy", "knn_acc", "epochs_completed"} <= WORDS


def test_numpy_and_torch_balancedness_agree():
    import numpy as np

    from analysis.tables import balancedness as numpy_form
    from trainables.metrics import balancedness as torch_form
    rng = np.random.default_rng(0)
    for size in (1, 2, 10, 100):
        acc = rng.uniform(0, 1, size).tolist()
        for sigma in (0.1, 0.5, 1.0):
            assert numpy_form(acc, sigma) == pytest.approx(torch_form(acc, sigma), rel=1e-12)
    assert numpy_form([0.0, 1.0]) == pytest.approx((2 + 2 * math.exp(-10)) / 4)


def test_analysis_imports_neither_torch_nor_ray():
    code = ("import sys, analysis.report, analysis.results, analysis.selection, analysis.figures\n"
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_private_name_is_imported_across_modules():
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                    found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_")]
    assert not found, found
