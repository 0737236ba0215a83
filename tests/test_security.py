"""No unsafe deserialisation or evaluation in the project's own code: every use of
pickle, torch.load, eval/exec or YAML is listed here with the reason it is safe."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "study", "search_spaces", "analysis")

# (file, pattern) -> why it is safe
ALLOWED = {
    ("trainables/data/cifar.py", "pickle"): "a restricted Unpickler: only numeric arrays and lists (tested)",
}
PATTERNS = {
    "pickle": re.compile(r"\bpickle\.(loads?|_?Unpickler)\b"),
    "eval": re.compile(r"(?<![\w.])(eval|exec)\("),
    "yaml": re.compile(r"\byaml\.(load|unsafe_load)\("),
    # Ray's restore unpickles tuner.pkl and the experiment state from the storage folder:
    # --resume rebuilds from study.journal instead (tests/study/test_storage_trust.py)
    "ray restore": re.compile(r"\b(Tuner\.restore|restore_from_dir|cloudpickle\.loads?|allow_cloudpickle)\b"),
    # a torch.load call whose line does not say weights_only=True
    "torch.load": re.compile(r"^(?!.*weights_only=True).*torch\.load\(", re.MULTILINE),
}


def test_no_unsafe_loading_or_evaluation_outside_the_allowed_list():
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for name, pattern in PATTERNS.items():
                if pattern.search(text):
                    found.add((str(path.relative_to(ROOT)), name))
    assert found <= set(ALLOWED), f"unreviewed: {sorted(found - set(ALLOWED))}"
    assert ("trainables/data/cifar.py", "pickle") in found       # the scan sees what it should
    assert PATTERNS["ray restore"].search("tune.Tuner.restore(path, trainable)")
    assert PATTERNS["torch.load"].search("x = torch.load(f, map_location='cpu')")
    assert not PATTERNS["torch.load"].search("x = torch.load(Path(f) / 'a', weights_only=True)")


def test_checkpoints_are_read_with_weights_only(tmp_path):
    import torch

    from trainables.tune_adapter import STATE_FILE, load_state

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))
    torch.save({"epoch": 1, "evil": Payload()}, tmp_path / STATE_FILE)
    import pickle
    try:
        load_state(str(tmp_path))
    except pickle.UnpicklingError as e:
        assert "weights_only" in str(e) or "Unsupported global" in str(e)
    else:
        raise AssertionError("a checkpoint with a code-running object was loaded")
