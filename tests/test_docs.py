"""Docs that cannot go stale: every command line in README.md and docs/*.md that runs
one of the project's entry points is accepted by that entry point's own parser
(flags exist, values parse; nothing runs)."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"python -m (study\.sweep|trainables\.trial|analysis\.report|study\.bench_results|study\.bench_clusters|study\.bench)\b"
                     r"([^`|&;#]*)")


def _code(text: str) -> list[str]:
    """The lines of fenced code blocks and the inline `code` spans of a markdown text."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    outside = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return [line for block in fenced for line in block.splitlines()] + re.findall(r"`([^`\n]+)`", outside)


def commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for doc in DOCS:
        for line in _code(doc.read_text()):
            for module, rest in COMMAND.findall(line):
                found.append((doc.name, module, shlex.split(rest)))
    return found


def _parser(module: str):
    import analysis.report
    import study.bench
    import study.bench_clusters
    import study.bench_results
    import study.sweep
    import trainables.trial
    return {"study.sweep": study.sweep, "trainables.trial": trainables.trial,
            "analysis.report": analysis.report, "study.bench": study.bench,
            "study.bench_results": study.bench_results, "study.bench_clusters": study.bench_clusters}[module].build_parser()


def test_the_docs_hold_commands_of_every_entry_point():
    modules = {module for _, module, _ in commands()}
    assert modules == {"study.sweep", "trainables.trial", "analysis.report", "study.bench", "study.bench_results",
                       "study.bench_clusters"}
    assert len(commands()) >= 20


@pytest.mark.parametrize("doc, module, argv", commands(),
                         ids=[f"{d}:{m} {' '.join(a)}"[:90] for d, m, a in commands()])
def test_every_documented_command_parses(doc, module, argv):
    from study.studies import STUDIES
    parser = _parser(module)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{doc}: `python -m {module} {' '.join(argv)}` is refused by its parser (exit {e.code})")
    if module == "study.sweep" and args.study is not None:
        # a real study, or the placeholder the usage line writes
        assert args.study in STUDIES or args.study == "STUDY", args.study
    if getattr(args, "set", None):                     # --set KEY=VALUE names real config keys
        from trainables.config import flat_keys
        from trainables.presets import parse_set
        assert set(parse_set(args.set)) <= set(flat_keys()), args.set


def test_the_readme_says_how_long_the_suite_takes():
    text = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in text
    assert re.search(r"The suite takes about \d+ minutes", text)
