"""Markdown for report.md, with every text that comes from a results row made inert.

Rows are data from elsewhere: an error message, a sweep name or a config string can
hold a table pipe that breaks the table, a backtick that opens code, brackets that
make a link or an image that fetches a URL when the report is rendered, an HTML tag
such as <script>, or a newline that ends the table. `escape` neutralises each.
Emphasis characters (*, _) are left alone: inside one table cell or one line they
can change how text looks, not what the report says, and trial ids keep their
underscores greppable.
"""

from __future__ import annotations

import math

import pandas as pd

_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]",
                          "<": "&lt;", "&": "&amp;"})


def one_line(value, limit: int | None = None) -> str:
    """`value` as text on one line (\n, \r\n, \r, \u2028 ... become spaces), cut to
    `limit` characters and marked with an ellipsis where given."""
    text = " ".join(str(value).splitlines())
    return text[: limit - 1] + "\u2026" if limit is not None and len(text) > limit else text


def escape(value) -> str:
    """`value` as one line of literal markdown text."""
    return one_line(value).translate(_ESCAPES)


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table; floats rounded, NaN shown as '-', every other cell escaped."""
    def cell(v):
        if isinstance(v, float):
            return "-" if math.isnan(v) else (f"{v:g}" if v.is_integer() else f"{v:.{digits}f}")
        return escape(v)
    lines = ["| " + " | ".join(map(escape, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
