"""`saliency report`: a page per run folder, self-contained, readable in a real browser.

The browser test drives Debian's headless Chromium (``apt-get install chromium``) over the
DevTools protocol and skips, saying so, where it is absent.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from browser import Browser, find_chromium
from conftest import run_cli
from makers import fixture_dataset

SCREENSHOTS_ENV = "SALIENCY_REPORT_SCREENSHOTS"  # a folder to keep the browser test's screenshots in

TINY_DISCOVER = ("--generator", "scenes", "--directions", "4", "--steps", "20", "--batch", "16", "--rca-samples",
                 "64", "--rca-every", "10", "--bg-samples", "16", "--refine-steps", "5", "--device", "cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real (tiny) discovery with its charts, and a real pipeline folder (stage 1 the true
    whiteness direction, so that stages 2-4 have pairs to make)."""
    from directions.generators.scenes import ScenesGenerator
    from directions.ground_truth import whiteness_direction
    from directions.run_folder import write_known_direction_run

    base = tmp_path_factory.mktemp("report")
    discover = base / "discover"
    result = run_cli("discover", *TINY_DISCOVER, "--out", str(discover), timeout=600)
    assert result.returncode == 0, result.stderr
    root = fixture_dataset(base / "root")
    pipeline = base / "pipeline"
    write_known_direction_run(pipeline / "discover", "scenes", whiteness_direction(ScenesGenerator()), magnitude=6.0)
    result = run_cli("pipeline", "--out", str(pipeline), "--data-root", str(root), "--pairs", "200", "--unet-steps",
                     "4", "--device", "cpu", timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"wrote {pipeline / 'report.html'}" in result.stdout
    return {"discover": discover, "pipeline": pipeline, "root": root}


def _sources(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html)


def test_the_pipeline_writes_a_self_contained_page_with_every_stage(runs):
    page = runs["pipeline"] / "report.html"
    html = page.read_text(encoding="utf-8")
    for title in ("Stage 1: discovered directions", "Stage 2: synthetic pairs", "Stage 3: the U-Net",
                  "Stage 4: evaluation (eval-ecssd)", "Stage 4: evaluation (eval-scenes)"):
        assert title in html, title
    # the numbers are the run's own
    manifest = json.loads((runs["pipeline"] / "synthesize" / "manifest.json").read_text())
    assert f"<td class=\"n\">{manifest['count']}</td>" in html
    metrics = json.loads((runs["pipeline"] / "eval-ecssd" / "metrics.json").read_text())
    test = metrics["splits"]["test"]
    assert f"{test['mae']:.3f}" in html and f"{test['paper_mae']:.3f}" in html  # both MAEs, beside the paper's
    assert "the paper (BigGAN, ECSSD; its split unpublished)" in html and "500 even-numbered images" in html
    gallery = json.loads((runs["pipeline"] / "eval-ecssd" / "gallery.json").read_text())
    assert gallery["best"][0]["mae"] <= gallery["worst"][0]["mae"] and len(gallery["best"]) == 2  # 2 test images
    assert f"worst {gallery['worst'][0]['stem']}" in html
    # self-contained: every picture inlined, nothing fetched from anywhere
    sources = _sources(html)
    assert sources and all(s.startswith("data:image/") for s in sources), [s[:40] for s in sources]
    assert "http://" not in html.replace("http-equiv", "") and "https://" not in html
    # the known-direction run has no charts: said in a line, not a traceback
    assert "direction charts: none in charts/" in html


def test_a_discovery_page_has_a_slider_per_direction_and_the_rca_curve(runs, tmp_path):
    out = tmp_path / "discover.html"
    result = run_cli("report", str(runs["discover"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"wrote {re.escape(str(out))} \(\d+ KB, [\d.]+ s\)\n", result.stdout)
    html = out.read_text(encoding="utf-8")
    assert html.count('class="shift"') == 4 and html.count('class="strip"') == 4
    summary = json.loads((runs["discover"] / "directions.json").read_text())
    assert [step for step, _ in summary["rca_curve"]] == [10, 20] and "RCA (fresh samples)" in html
    assert f"<b>{summary['rca']:.3f}</b>" in html and "chance (1/K)" in html
    # each card says how far its direction moves an image (and, on scenes, which factor it moves)
    change = summary["effects"]["per_direction"]["change"]
    factors = {row["direction"]: row["factor"] for row in summary["ground_truth"]["factors"]}
    for k in range(4):
        assert f"direction {k} ({factors[k]}, change {change[k]:.2f})" in html
    assert "h_bg: the background direction" in html and 'class="chosen"' in html


def test_the_bar_counts_the_pictures_and_starts_only_once_the_folder_is_checked(runs, tmp_path, capsys):
    from pipelines.report import render, write_report
    from saliency.core.errors import UserError

    with pytest.raises(UserError, match="holds no run"):
        write_report(tmp_path, tmp_path / "page.html", progress=True)
    assert capsys.readouterr().err == ""  # a refusal is its one line: no bar before it
    if Path("/proc/self").is_dir():  # a place nothing can be written in, said before the page is made
        with pytest.raises(UserError, match="cannot write in /proc"):
            write_report(runs["discover"], "/proc/page.html", progress=True)
        assert capsys.readouterr().err == ""
    write_report(runs["discover"], tmp_path / "page.html", progress=True)
    assert "page.html: 0picture" in capsys.readouterr().err  # into a file: redrawn every 10 s

    class Counter:
        n = 0

        def update(self, n: int = 1) -> None:
            self.n += n

    counter = Counter()
    render(runs["discover"], counter)
    assert counter.n > 4  # the charts and a strip per direction, counted as each is encoded


def test_a_sweep_and_a_predict_folder_get_their_pages(runs, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("sweep", "--generator", "scenes", "--out", str(sweep), "--vary", "directions=3,4", "--seeds",
                     "0", "--steps", "4", "--batch", "16", "--rca-samples", "16", "--no-charts", "--no-bg-search",
                     "--resolution", "32", "--device", "cpu", timeout=600)
    assert result.returncode == 0, result.stderr
    assert run_cli("report", str(sweep)).returncode == 0
    html = (sweep / "report.html").read_text(encoding="utf-8")
    assert "<h2>Sweep</h2>" in html and html.count("<tr>") >= 3  # the header and one row per K

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(next((runs["root"] / "ECSSD" / "images").glob("*.jpg")), photos / "a.jpg")
    maps = tmp_path / "maps"
    predicted = run_cli("predict", "--model", str(runs["pipeline"] / "unet"), str(photos), "--out", str(maps),
                        "--device", "cpu", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert run_cli("report", str(maps)).returncode == 0
    html = (maps / "report.html").read_text(encoding="utf-8")
    assert "<h2>Predictions</h2>" in html and "1 output file(s)" in html and "a.map.png" in html


def test_a_run_missing_parts_still_gets_a_page(runs, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["pipeline"], damaged)
    (damaged / "synthesize" / "preview.png").unlink()
    (damaged / "eval-ecssd" / "predictions.png").write_bytes(b"not a png")
    (damaged / "unet" / "model.json").write_text("{ torn")
    shutil.rmtree(damaged / "eval-scenes")
    result = run_cli("report", str(damaged))
    assert result.returncode == 0, result.stderr
    html = (damaged / "report.html").read_text(encoding="utf-8")
    assert "pairs preview: preview.png is missing" in html
    assert "predictions picture: predictions.png is not a readable picture" in html
    assert "U-Net: model.json is damaged" in html
    assert "Stage 4: evaluation (eval-ecssd)" in html and "eval-scenes" not in html


@pytest.mark.skipif(find_chromium() is None, reason="needs Chromium (apt-get install chromium)")
def test_the_page_works_in_a_real_browser_from_the_file_system(runs, tmp_path):
    import os

    keep = Path(os.environ[SCREENSHOTS_ENV]) if os.environ.get(SCREENSHOTS_ENV) else tmp_path
    discover_page = tmp_path / "discover.html"
    assert run_cli("report", str(runs["discover"]), "--out", str(discover_page)).returncode == 0
    with Browser(find_chromium()) as browser:
        for name, page in (("pipeline", runs["pipeline"] / "report.html"), ("discover", discover_page)):
            browser.open(page.as_uri())
            images = browser.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
            assert images and all(images), (name, images)
            assert browser.errors() == [], browser.errors()
            outside = [u for u in browser.requests() if not u.startswith(("file://", "data:"))]
            assert outside == [], outside
            browser.screenshot(keep / f"report-{name}.png", full_page=True)
        # the slider moves the picture along the direction: another frame is shown
        box = browser.evaluate("(() => { const r = document.querySelector('figure.direction .frame')"
                               ".getBoundingClientRect(); return {x: r.left + window.scrollX, "
                               "y: r.top + window.scrollY, width: r.width, height: r.height}; })()")
        before = browser.screenshot(clip=box)
        label = browser.evaluate("(async () => { const s = document.querySelector('figure.direction .shift');"
                                 " s.value = 0; s.dispatchEvent(new Event('input')); await new Promise(done => "
                                 "requestAnimationFrame(() => requestAnimationFrame(done))); "
                                 "return document.querySelector('figure.direction .value').textContent; })()")
        after = browser.screenshot(clip=box)
        assert label == "-8" and before != after
        assert browser.errors() == []
