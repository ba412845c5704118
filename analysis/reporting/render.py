"""A report as a list of :class:`Block`s, rendered twice (Markdown and HTML) so both say the same.

The HTML page is self-contained: every plot is embedded as a base64 PNG and named by its file
(``data-file``, ``alt`` and the caption), the file itself lying next to the page, so it opens
offline. Cells are formatted by :func:`fmt` everywhere (tables, sentences, the closing summary).

The page fits a 1280-px window without a horizontal scroll bar: a table wider than
:data:`HTML_COLUMNS` columns shows its first ones (the blocks put the key columns first) and
links a CSV with all of them (the block's ``csv``, else ``table<k>.csv`` written beside the
page); long words (paths) wrap; a table that is still too wide scrolls inside itself.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.contract.layout import REPORT_HTML, REPORT_MD


@dataclass
class Block:
    """One piece of the report: ``kind`` is h1/h2/h3/p/list/table/image/code."""

    kind: str
    text: str = ""
    items: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = None
    file: str = ""
    caption: str = ""
    csv: str = ""  # a table's full CSV beside the page (written by the caller), linked when it is cut


def fmt(value: Any) -> str:
    """A cell as text: 4 significant digits, integers plain, '' for missing, 'inf' kept."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if float(value).is_integer() and abs(value) < 1e9:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every cell formatted by :func:`fmt`."""
    return frame.map(fmt) if len(frame) else frame.astype(str)


def relation(best: float, other: float, mode: str) -> str:
    """How ``best`` compares with ``other`` for a metric of direction ``mode``, as words: a ratio
    when both are positive ("2.73x lower (better)"), else the difference."""
    if any(v is None or not math.isfinite(v) for v in (best, other)):
        if other is not None and math.isinf(other) and best is not None and math.isfinite(best):
            return "finite where the other is not (better)"
        return "not comparable (a value is missing)"
    if best == other:
        return "equal"
    lower = best < other
    better = lower if mode == "min" else not lower
    word = "lower" if lower else "higher"
    if best > 0 and other > 0:
        size = f"{max(best, other) / min(best, other):.2f}x {word}"
    else:
        size = f"{abs(best - other):.4g} {word}"
    return f"{size} ({'better' if better else 'worse'})"


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _md_cells(row: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"


def md_table(frame: pd.DataFrame) -> str:
    text = text_frame(frame)
    lines = [_md_cells(text.columns), "|" + "|".join("---" for _ in text.columns) + "|"]
    lines += [_md_cells(row) for row in text.itertuples(index=False)]
    return "\n".join(lines)


def _md_block(b: Block) -> str:
    if b.kind in ("h1", "h2", "h3"):
        return "#" * int(b.kind[1]) + " " + b.text
    if b.kind == "list":
        return "\n".join(f"- {item}" for item in b.items)
    if b.kind == "table":
        return md_table(b.frame) if b.frame is not None and len(b.frame) else "_(empty)_"
    if b.kind == "image":
        return f"![{b.file}: {b.caption}]({b.file})\n\n*{b.file}: {b.caption}*"
    if b.kind == "code":
        return f"```\n{b.text}\n```"
    return b.text


def render_markdown(blocks: Sequence[Block]) -> str:
    """The report as Markdown; images are linked by file name (they sit next to report.md)."""
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


HTML_COLUMNS = 9  # a wider table shows its first columns on the page and links the rest as CSV

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;
overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:13px;margin:.5em 0;display:block;max-width:100%;overflow-x:auto}
.cut{font-size:13px;color:#555;margin:0 0 1em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f2f2f2}td:nth-child(-n+3){text-align:left}figure{margin:1em 0}img{max-width:100%}
figcaption{font-size:13px;color:#555}code,pre{background:#f6f6f6}pre{padding:.5em;overflow-x:auto}"""


def _html_image(b: Block, out_dir: Path) -> str:
    data = base64.b64encode((out_dir / b.file).read_bytes()).decode("ascii")
    name, caption = html.escape(b.file, quote=True), html.escape(b.caption, quote=True)
    return (
        f'<figure><img src="data:image/png;base64,{data}" data-file="{name}" alt="{name}: {caption}" '
        f'title="{name}"><figcaption><code>{name}</code>: {caption}</figcaption></figure>'
    )


def _html_table(b: Block, out_dir: Path, number: int) -> str:
    frame = b.frame
    if frame is None or not len(frame):
        return "<p><em>(empty)</em></p>"
    if len(frame.columns) <= HTML_COLUMNS:
        return text_frame(frame).to_html(index=False, escape=True, border=0)
    csv = b.csv or f"table{number}.csv"
    if not b.csv:
        frame.to_csv(out_dir / csv, index=False)
    name = html.escape(csv, quote=True)
    return text_frame(frame[list(frame.columns[:HTML_COLUMNS])]).to_html(index=False, escape=True, border=0) + (
        f'<p class="cut">{HTML_COLUMNS} of {len(frame.columns)} columns shown; all of them: '
        f'<a href="{name}">{name}</a></p>'
    )


def _html_block(b: Block, out_dir: Path, number: int = 0) -> str:
    if b.kind in ("h1", "h2", "h3"):
        return f"<{b.kind}>{html.escape(b.text)}</{b.kind}>"
    if b.kind == "list":
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>"
    if b.kind == "table":
        return _html_table(b, out_dir, number)
    if b.kind == "image":
        return _html_image(b, out_dir)
    if b.kind == "code":
        return f"<pre><code>{html.escape(b.text)}</code></pre>"
    return f"<p>{html.escape(b.text)}</p>"


def render_html(blocks: Sequence[Block], out_dir: Path, title: str) -> str:
    """The report as one HTML page; each image is embedded as a data URI and named by its file
    (``data-file``, ``alt`` and the caption), the file itself lying in ``out_dir``."""
    body = "\n".join(_html_block(b, out_dir, k) for k, b in enumerate(blocks, start=1))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def top_text(ranked: pd.DataFrame, columns: Sequence[str], top: int) -> tuple[str, bool]:
    """The first ``top`` rows of ranked trials as plain text with ``columns`` (cells by
    :func:`fmt`), and whether they span several protocols: then the first ``top`` of each
    protocol, with a protocol column."""
    mixed = "protocol" in ranked and ranked["protocol"].nunique() > 1
    show = [c for c in (("protocol",) if mixed else ()) + tuple(columns) if c in ranked]
    parts = (
        [ranked[ranked["protocol"] == g].head(top) for g in ranked["protocol"].unique()]
        if mixed
        else [ranked.head(top)]
    )
    return pd.concat(parts)[show].map(fmt).to_string(index=False), mixed


def write_pages(blocks: Sequence[Block], out_dir: Path, title: str) -> Path:
    """Write report.md and report.html of ``blocks`` into ``out_dir``; return report.html's path."""
    (out_dir / REPORT_MD).write_text(render_markdown(blocks))
    page = out_dir / REPORT_HTML
    page.write_text(render_html(blocks, out_dir, title))
    return page
