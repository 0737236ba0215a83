"""The confirmed frontier (study.confirm, `--confirm K`): each Pareto-optimal search trial
re-run with K new seeds, beside the single value the search selected it on.

For a member m of a front and an objective o, with x_{m,j} its confirmation on new seed j:

    search value     v_m                              (one seed, selected because it was high)
    confirmed        mean_j x_{m,j}  +- t_{0.975, K-1} * sd_j(x_{m,j}) / sqrt(K)
    overstatement    v_m - mean_j x_{m,j}             (the winner's curse, per member)

and over the members, the mean overstatement with its 95% t interval: how much a
single-seed frontier promises beyond what its configurations deliver.

The members of one front ran on the same K seeds, so two members a, b compare paired by
seed: d_j = x_{a,j} - x_{b,j}, mean(d) and its 95% t interval. A difference is claimed
only where that interval excludes 0, else "no difference detected at n = K".
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

from analysis.selection import mean_ci
from analysis.tables import KNOBS
from trainables import names

SHORT = {"loss.k": "k", "loss.temperature": "t", "optim.lr": "lr", "optim.weight_decay": "wd"}


def split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the search's rows, the confirmation rows); rows without the column are the search's."""
    if names.CONFIRM_COLUMN not in df:
        return df, df.iloc[0:0]
    confirming = df[names.CONFIRM_COLUMN].notna()
    return df[~confirming], df[confirming]


def label(row, knobs) -> str:
    """A member by its knobs, e.g. "k=6 t=0.300"."""
    parts = [f"{SHORT.get(k, k)}={row[k]:.3g}" if isinstance(row[k], float) else f"{SHORT.get(k, k)}={row[k]}"
             for k in knobs if pd.notna(row[k])]
    return " ".join(parts) or str(row["trial_id"])


def _knobs(search: pd.DataFrame) -> list[str]:
    return [k for k in KNOBS if k != "seed" and k in search and search[k].nunique() > 1]


def confirmed_table(df: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """One row per confirmed member: loss, ratio, its knobs, trial_id, seeds (ok
    confirmations), and per objective o: "o search", "o confirmed", "o low", "o high",
    "o overstated" (search - confirmed mean)."""
    search, confirmations = split(df)
    knobs = _knobs(search)
    ok = confirmations[confirmations[names.STATUS] == "ok"]
    rows = []
    for trial_id, runs in confirmations.groupby(names.CONFIRM_COLUMN, sort=False):
        member = search[search["trial_id"] == trial_id]
        if member.empty:
            continue
        m = member.iloc[0]
        row = {"loss": m["loss.name"], "ratio": m["data.imbalance_ratio"], **{k: m[k] for k in knobs},
               "member": label(m, knobs), "trial_id": trial_id,
               "seeds": int((ok[names.CONFIRM_COLUMN] == trial_id).sum()), "runs": len(runs)}
        for o in objectives:
            mean, low, high = mean_ci(ok.loc[ok[names.CONFIRM_COLUMN] == trial_id, o])
            row.update({f"{o} search": m[o], f"{o} confirmed": mean, f"{o} low": low, f"{o} high": high,
                        f"{o} overstated": m[o] - mean})
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["loss", "ratio", "trial_id"]).reset_index(drop=True) if len(table) else table


def winners_curse(table: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Per objective: the members, their mean overstatement (search - confirmed) and its 95% t
    interval over the members."""
    rows = []
    for o in objectives:
        values = table[f"{o} overstated"].dropna() if len(table) else pd.Series(dtype=float)
        rows.append({"objective": o, "members": len(values), **dict(zip(("overstated", "ci low", "ci high"),
                                                                         mean_ci(values)))})
    return pd.DataFrame(rows)


def member_differences(df: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Per front (loss, ratio), pair of members (a, b) and objective: the seeds both ran ok,
    the mean difference a - b paired by seed and its 95% t interval."""
    search, confirmations = split(df)
    knobs = _knobs(search)
    ok = confirmations[confirmations[names.STATUS] == "ok"]
    labels = {r["trial_id"]: label(r, knobs) for r in search.to_dict("records")}
    front = ok.merge(search[["trial_id", "loss.name", "data.imbalance_ratio"]].rename(
        columns={"trial_id": names.CONFIRM_COLUMN, "loss.name": "loss", "data.imbalance_ratio": "ratio"}),
        on=names.CONFIRM_COLUMN)
    rows = []
    for (loss, ratio), group in front.groupby(["loss", "ratio"]):
        wide = {o: group.pivot_table(index="seed", columns=names.CONFIRM_COLUMN, values=o, dropna=False)
                for o in objectives}
        for a, b in itertools.combinations(sorted(group[names.CONFIRM_COLUMN].unique()), 2):
            for o in objectives:
                if a not in wide[o] or b not in wide[o]:      # a member without a value of o
                    continue
                d = (wide[o][a] - wide[o][b]).dropna()
                rows.append({"loss": loss, "ratio": ratio, "a": labels[a], "b": labels[b], "objective": o,
                             "pairs": len(d), **dict(zip(("difference", "ci low", "ci high"), mean_ci(d)))})
    return pd.DataFrame(rows, columns=["loss", "ratio", "a", "b", "objective", "pairs", "difference", "ci low",
                                       "ci high"])


def differs(row) -> bool:
    return not math.isnan(row["ci low"]) and (row["ci low"] > 0 or row["ci high"] < 0)


def sentence(row) -> str:
    """What one paired comparison of two members allows one to say."""
    where = f"{row['loss']} at ratio {row['ratio']:g}, {row['objective']}"
    numbers = f"{row['difference']:+.3f} [{row['ci low']:+.3f}, {row['ci high']:+.3f}], n = {row['pairs']} seeds"
    if math.isnan(row["ci low"]):
        return f"{where}: {row['a']} vs {row['b']}: fewer than 2 paired seeds, no interval"
    if differs(row):
        better, worse = (row["a"], row["b"]) if row["difference"] > 0 else (row["b"], row["a"])
        return f"{where}: {better} beats {worse} ({numbers})"
    return f"{where}: {row['a']} vs {row['b']}: no difference detected at n = {row['pairs']} ({numbers})"


def _shown(table: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """The table for reading: each objective's search value and its confirmed mean [interval]."""
    out = table[["loss", "ratio", "member", "trial_id", "seeds"]].copy()
    for o in objectives:
        out[f"{o} search"] = table[f"{o} search"].round(3)
        out[f"{o} confirmed"] = [f"{m:.3f}" if math.isnan(lo) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
                                 for m, lo, hi in zip(table[f"{o} confirmed"], table[f"{o} low"], table[f"{o} high"])]
    return out


def curse_lines(table: pd.DataFrame, objectives: list[str]) -> list[str]:
    """The winner's curse in words, one line per objective."""
    lines = []
    for r in winners_curse(table, objectives).to_dict("records"):
        interval = "" if math.isnan(r["ci low"]) else f" [{r['ci low']:+.3f}, {r['ci high']:+.3f}]"
        lines.append(f"{r['objective']}: the search's value exceeded the confirmed mean by {r['overstated']:+.3f}"
                     f"{interval} on average over {r['members']} frontier members")
    return lines


def summary_lines(df: pd.DataFrame, objectives: list[str]) -> list[str]:
    """The sweep summary's part: the confirmed table, the winner's curse, the members that
    differ (and how many pairs do not); nothing without confirmations."""
    table = confirmed_table(df, objectives)
    if table.empty:
        return []
    diffs = member_differences(df, objectives)
    found = [sentence(r) for r in diffs.to_dict("records") if differs(r)]
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        lines = ["", "Confirmed frontier (each member re-run on new seeds; mean [95% interval]):",
                 _shown(table, objectives).to_string(index=False), "", "Winner's curse:",
                 *curse_lines(table, objectives)]
    lines += ["", "Frontier members that differ (paired by seed, 95% interval excludes 0):", *(found or ["none"])]
    if len(diffs) > len(found):
        lines.append(f"no difference detected in the other {len(diffs) - len(found)} member pair x objective "
                     "comparisons")
    return lines


def report_section(df: pd.DataFrame, objectives: list[str], markdown_table) -> list[str]:
    """The report's confirmed frontier; nothing without confirmation rows."""
    table = confirmed_table(df, objectives)
    if table.empty:
        return []
    diffs = member_differences(df, objectives)
    return ["## Confirmed frontier",
            "Each Pareto-optimal search trial re-run on the same new seeds (`--confirm K`): its search value "
            "(one seed, selected because it was high) beside the confirmed mean and its 95% t interval.",
            markdown_table(_shown(table, objectives)),
            "### Winner's curse", "\n".join(f"- {line}" for line in curse_lines(table, objectives)),
            "Read it with care: where the search ran every configuration on one seed, the overstatement also "
            "holds that seed's offset from the new ones, shared by every member, and the interval treats the "
            "members as independent though they share their seeds.",
            "### Do the frontier members differ?",
            "Members of one front, paired by seed; a difference is claimed only where its 95% interval "
            "excludes 0.",
            "\n".join(f"- {sentence(r)}" for r in diffs.to_dict("records")) or "One member per front: nothing "
            "to compare."]
