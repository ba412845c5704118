"""The report of the smoke search in a real browser (Debian's Chromium, headless, a 1280-px
window): no horizontal scroll, every image decoded at its file's own size, the answer opens with
one sentence and one figure, and every link to a cut table's CSV reaches a file beside the page.
The page is measured by a script the test appends to a copy of it (the report itself has none);
Chromium's ``--dump-dom`` prints the page with the script's findings once it has loaded."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

WIDTH = 1280
MEASURE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement;
  const answer = [...document.querySelectorAll("h2")].find(h => h.textContent === "Answer");
  const after = [];
  for (let e = answer && answer.nextElementSibling; e && after.length < 3; e = e.nextElementSibling) {
    after.push({tag: e.tagName, file: (e.querySelector("img") || {dataset: {}}).dataset.file || "",
                text: e.textContent.slice(0, 400)});
  }
  const out = {
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, innerWidth: window.innerWidth,
    images: [...document.images].map(i => ({file: i.dataset.file, complete: i.complete,
                                           width: i.naturalWidth, height: i.naturalHeight})),
    links: [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href")),
    answer: after,
  };
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's Chromium is needed for this test: apt-get install chromium (.ci/run installs it)"
    return found


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def measure(page: Path, tmp_path: Path) -> dict:
    copy = page.parent / f".measure-{tmp_path.name}.html"  # beside the page: its links resolve the same
    copy.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    try:
        done = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp_path / 'profile'}",
                f"--window-size={WIDTH},900",
                "--virtual-time-budget=10000",
                "--dump-dom",
                copy.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        copy.unlink()
    found = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no measurement in Chromium's output: {done.stdout[-500:]} {done.stderr[-1500:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_report_reads_well_at_1280_px(smoke_experiment, tmp_path):
    report = smoke_experiment.exp_dir / "report"
    seen = measure(report / "report.html", tmp_path)
    assert seen["innerWidth"] == WIDTH
    assert seen["scrollWidth"] <= seen["clientWidth"], seen  # no horizontal scroll
    # every image decoded, at the pixel size of the PNG file beside the page
    assert len(seen["images"]) >= 4
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0, image
        assert (image["width"], image["height"]) == png_size(report / image["file"]), image
    # the answer: one sentence, then one figure (the best samples beside real digits, and the metric)
    first, second = seen["answer"][:2]
    assert first["tag"] == "P" and first["text"].count(". ") == 0 and first["text"].endswith("."), first
    assert second["tag"] == "FIGURE" and second["file"] == "answer.png", second
    # wide tables are cut to their key columns, the rest one click away in a CSV beside the page
    csvs = [link for link in seen["links"] if link.endswith(".csv")]
    assert "leaderboard.csv" in csvs
    for link in csvs:
        assert (report / link).is_file(), link
