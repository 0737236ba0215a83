"""`python -m analysis.report RESULTS... [--out DIR] [--sigma 0.1,0.5,1] [--probe lt]`

Reads one or several sweeps' Parquet results (nothing else) and writes report.md
and its figures: a table per loss and imbalance level, the frontier members with
their parameters, the slope of p(V) against log imbalance per loss with a
confidence interval, and whether the losses' ranking by p(V) depends on sigma.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis import comparisons, confirmation, convergence, figures, importance, label_free, selection
from analysis.bucket import is_remote, join, local_copy, upload_tree
from analysis.markdown import escape, markdown_table, one_line
from analysis.results import load_results
from analysis.tables import (
    KNOBS,
    add_derived,
    frontier_members,
    hypervolume_table,
    level_table,
    ok_trials,
    sigma_ranking,
    slope_table,
)
from trainables import names

__all__ = ["REPORT_COLUMNS", "build_report", "main", "markdown_table", "write_report"]

# The only columns the report reads: a large sweep loads a fraction of its rows' bytes.
REPORT_COLUMNS = ["trial_id", "sweep", names.STATUS, "error", "num_classes", "class_counts", "loss.name",
                  "data.imbalance_ratio", "data.dataset", "model.arch", "eval.sigma", *KNOBS, names.CONFIRM_COLUMN,
                  *[c for p in names.PROBES for c in (*names.probe_columns(p), names.probe_metric(p, names.PER_CLASS))]]
FAILURES_SHOWN, ERROR_CHARS = 20, 300


def failures(df: pd.DataFrame) -> list[str]:
    """The trials that did not end ok, with their error's last line: the first
    FAILURES_SHOWN, each error cut to ERROR_CHARS (markdown_table escapes it: it is text from a row)."""
    failed = df[df[names.STATUS] != "ok"]
    if failed.empty:
        return []
    shown = failed[["trial_id", names.STATUS, "error"]].head(FAILURES_SHOWN).fillna("-")
    shown["error"] = [one_line(e, ERROR_CHARS) for e in shown["error"]]
    return [f"## Trials without status ok ({len(failed)})",
            f"The first {len(shown)}, with the last line of their error:",
            markdown_table(shown)]


def _trials_line(df: pd.DataFrame, confirmations: pd.DataFrame) -> str:
    counts = df[names.STATUS].value_counts().to_dict()
    return (f"Sweeps: {', '.join(escape(s) for s in sorted(df['sweep'].unique()))}. Trials: {len(df)} "
            f"({', '.join(f'{n} {escape(s)}' for s, n in sorted(counts.items()))}); the tables use the ok ones"
            + (f". And {len(confirmations)} confirmation trials (the confirmed frontier's)." if len(confirmations)
               else "."))


def _figures(ok: pd.DataFrame, out: Path, probe: str, sigma: float) -> list[Path | None]:
    return [figures.figure2(ok, out, sigma), figures.tradeoff(ok, out, probe, sigma),
            figures.kcl_knobs(ok, out, probe, sigma), figures.head_tail(ok, out, probe)]


def build_report(df: pd.DataFrame, out: Path, sigmas: list[float], probe: str,
                 objectives: list[str] | None = None) -> str:
    """Write the figures into `out` and return the report's markdown. Every table but the
    confirmed frontier's (by `objectives`, default the probe's top-1 and p(V)) reads the
    search's rows: a confirmation repeats a chosen configuration."""
    everything, (df, confirmations) = df, confirmation.split(df)
    ok = add_derived(ok_trials(df), sigmas=sigmas)
    if ok.empty:
        raise ValueError("no trial with status ok: nothing to report")
    sigma = float(ok["eval.sigma"].iloc[0])           # the sigma the sweep stored p(V) with
    made = _figures(ok, out, probe, sigma)
    ranking, changed = sigma_ranking(ok, sigmas, probe)
    other = names.BALANCED if probe == names.LT else names.LT
    parts = [
        "# Balanced feature spaces: sweep report",
        _trials_line(df, confirmations),
        "p(V) is read beside top-1, never alone: a uniformly poor encoder looks balanced. "
        "CV is the coefficient of variation of the class accuracies (std / mean), a scale-free "
        "spread: high top-1 with low CV is balanced because good; low top-1 is not, whatever p(V) says.",
        f"## Per loss and imbalance level: {figures.PROBE_NAMES[probe]}",
        markdown_table(level_table(ok, probe)),
        f"## Per loss and imbalance level: {figures.PROBE_NAMES[other]}",
        markdown_table(level_table(ok, other)),
        "## Frontier members (Pareto-optimal in top-1 and p(V) within their loss and level)",
        markdown_table(frontier_members(ok, names.sweep_objectives(probe, "multi"))),
        "## Hypervolume of each front",
        "The area of the (top-1, p(V)) square that the level's trials dominate, above the "
        "reference point (0, 0): one number per front, larger is better; it compares sweeps "
        "of one level, e.g. with and without `--scheduler moasha`.",
        markdown_table(hypervolume_table(ok, names.sweep_objectives(probe, "multi"))),
        *confirmation.report_section(everything, objectives or names.sweep_objectives(probe, "multi"), markdown_table),
        *comparisons.report_section(ok, probe, markdown_table),
        "## Does balancedness depend on the imbalance?",
        "Least-squares slope of p(V) against log10(imbalance ratio), 95% confidence interval "
        "(t distribution), for both probes: the balanced probe's slope is the features' own, "
        "without the long-tailed classifier's bias. An interval that contains 0 is consistent "
        "with balancedness independent of the imbalance.",
        markdown_table(pd.concat([slope_table(ok, p).assign(probe=figures.PROBE_NAMES[p])
                                  for p in (names.LT, names.BALANCED)])[["probe", "loss", "trials", "slope",
                                                                 "ci low", "ci high"]]),
        f"## Sensitivity to sigma (the paper does not state it; the sweep used {sigma:g})",
        f"p(V) recomputed from the stored per-class accuracies at sigma = "
        f"{', '.join(f'{s:g}' for s in sigmas)}. The ranking of the losses by mean p(V) "
        + ("**changes** with sigma at some level." if changed else "does **not** change with sigma."),
        markdown_table(ranking),
        "## Figures",
        *[f"![{p.stem}]({p.name})" for p in made if p is not None],
        *failures(everything),
    ]
    return "\n\n".join(parts) + "\n"


def write_report(paths, out: str | Path | None = None, sigmas=(0.1, 0.5, 1.0), probe: str = names.LT) -> Path:
    """Load the sweeps, write report.md and the PNGs into `out`; return report.md's path.
    A sweep in a bucket (s3://...) is read from a local copy of its results and journal."""
    paths = [local_copy(str(p), ("results", "journal.jsonl")) if is_remote(p) else Path(p)
             for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    objectives = importance.sweep_objectives([sweep_folder(p) for p in paths])   # what the search maximised
    df = load_results(paths, columns=list(dict.fromkeys([*REPORT_COLUMNS, *objectives])))
    out = Path(out) if out else paths[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = build_report(df, out, list(sigmas), probe, objectives)
    trained = convergence.report_section(paths, ok_trials(confirmation.split(df)[0]), markdown_table)
    text += "\n" + "\n\n".join(trained) + "\n" if trained else ""
    knobs = importance.report_section([sweep_folder(p) for p in paths], out, markdown_table)
    text += "\n" + "\n\n".join(knobs) + "\n" if knobs else ""
    if any(selection.has_selection(p) for p in paths):
        rows, num_classes = selection.load_selection(paths), int(df["num_classes"].dropna().iloc[0])
        parts = selection.report_sections(rows, out, num_classes, markdown_table)
        parts += label_free.report_section(rows, num_classes, markdown_table)
        text += "\n" + "\n\n".join(parts) + "\n"
    path = out / "report.md"
    path.write_text(text)
    return path


def sweep_folder(path: Path) -> Path:
    """A sweep's folder from what the report was given: the sweep folder or its results/."""
    return path.parent if path.name == "results" else path


def _sigmas(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.1,0.5,1, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"every sigma must be > 0, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="sweep folders (DIR/NAME) or their results folders")
    parser.add_argument("--out", help="output folder (default: the first sweep's report/)")
    parser.add_argument("--sigma", type=_sigmas, default=[0.1, 0.5, 1.0], help="sigmas for p(V), e.g. 0.1,0.5,1")
    parser.add_argument("--probe", choices=list(names.PROBES), default=names.LT)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    remote = is_remote(args.results[0]) and args.out is None
    try:
        path = write_report(args.results, args.out, args.sigma, args.probe)
        if remote:                               # beside the sweep, in its bucket
            upload_tree(path.parent, join(args.results[0], "report"))
    except (FileNotFoundError, ValueError, OSError) as e:
        parser.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
    print(f"report: {join(args.results[0], 'report', 'report.md') if remote else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
