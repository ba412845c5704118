"""analysis/reporting/render.py: one list of blocks, rendered as Markdown and as a self-contained HTML page."""

from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd
from fake_experiment import write_png

from analysis.reporting.render import Block, fmt, relation, render_html, render_markdown, top_text, write_pages


def test_cells_are_formatted_one_way():
    assert [
        fmt(v)
        for v in (None, math.nan, pd.NA, True, np.bool_(False), 3, np.int64(4), 2.0, 0.123456, math.inf, -math.inf, "x")
    ] == ["", "", "", "yes", "no", "3", "4", "2", "0.1235", "inf", "-inf", "x"]
    assert fmt(1e12) == "1e+12"


def test_relations_are_worded_by_direction():
    assert relation(0.1, 0.273, "min") == "2.73x lower (better)"
    assert relation(0.1, 0.273, "max") == "2.73x lower (worse)"
    assert relation(-1.0, 1.0, "min") == "2 lower (better)"
    assert relation(0.5, 0.5, "min") == "equal"
    assert relation(0.5, math.inf, "min") == "finite where the other is not (better)"
    assert relation(math.nan, 0.5, "min") == "not comparable (a value is missing)"


def test_markdown_and_html_say_the_same(tmp_path):
    write_png(tmp_path / "plot.png", 1)
    table = pd.DataFrame({"trial": ["a|b"], "kid": [0.123456]})
    blocks = [
        Block("h1", "Title <x>"),
        Block("p", "text & more"),
        Block("list", items=["one", "two"]),
        Block("table", frame=table),
        Block("table", frame=table.iloc[:0]),
        Block("image", file="plot.png", caption="a plot"),
        Block("code", text="python x.py"),
    ]
    md = render_markdown(blocks)
    assert md.startswith("# Title <x>\n\ntext & more\n\n- one\n- two\n\n| trial | kid |")
    assert "| a\\|b | 0.1235 |" in md and "_(empty)_" in md
    assert "![plot.png: a plot](plot.png)" in md and "```\npython x.py\n```" in md
    page = render_html(blocks, tmp_path, "T")
    assert "<h1>Title &lt;x&gt;</h1>" in page and "<p>text &amp; more</p>" in page and "<li>two</li>" in page
    data = base64.b64encode((tmp_path / "plot.png").read_bytes()).decode()
    assert f'src="data:image/png;base64,{data}" data-file="plot.png"' in page
    assert "<td>0.1235</td>" in page and "<em>(empty)</em>" in page
    written = write_pages(blocks, tmp_path, "T")
    assert written.read_text() == page and (tmp_path / "report.md").read_text() == md


def test_top_text_splits_by_protocol_only_when_mixed():
    ranked = pd.DataFrame({"protocol": ["p", "p", "q"], "trial_id": ["a", "b", "c"], "kid": [0.1, 0.2, 0.3]})
    text, mixed = top_text(ranked.iloc[:2], ("trial_id", "kid"), top=1)
    assert not mixed and text.split() == ["trial_id", "kid", "a", "0.1"]
    text, mixed = top_text(ranked, ("trial_id", "kid"), top=1)
    assert mixed and text.split() == ["protocol", "trial_id", "kid", "p", "a", "0.1", "q", "c", "0.3"]
