"""eval.report / eval.plots: report.html + report.md rendered from an eval run, checked as text and in Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from eval.plots import plot_roc, plot_turn_length, plot_drift, render_plots
from eval.report import cli, md_cell, metric_table, render_report
from synthetic_eval_run import HOSTILE_TEXT, write_tree

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def rendered(tmp_path):
    ev = write_tree(tmp_path / "run")
    return ev, render_report(ev)


def _inline_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_files_and_headline_numbers(rendered):
    ev, html_path = rendered
    assert html_path == ev / "report.html"
    for name in ("report.md", "plot_turn_length.png", "plot_disclosure_curve.png", "plot_drift.png", "plot_roc.png"):
        assert (ev / name).is_file(), name
    html = html_path.read_text()
    md = (ev / "report.md").read_text()
    for text in (html, md):
        assert "0.612 [0.581, 0.643]" in text and "0.913 [0.882, 0.944]" in text  # discriminator, trained vs base
        assert "23.4 [22.2, 24.6]" in text and "61.8 [58.7, 64.9]" in text  # perplexity, trained vs base
        assert "target 0.5" in text
        assert "Controls passed" in text


def test_every_metric_has_a_row_with_reference_and_direction(rendered):
    ev, html_path = rendered
    html = html_path.read_text()
    md = (ev / "report.md").read_text()
    rows = json.loads((ev / "metrics.json").read_text())["metrics"]
    for name in {r["name"] for r in rows}:
        assert f"<td>{name}</td>" in html
        assert f"| {name} |" in md
    assert "| behaviour | turn_length | 11.2 [10.5, 11.9] | 34.5 [32.4, 36.6] | 9.8 | match human |" in md
    assert "↓ lower is better" in html and "↑ higher is better" in html


def test_plots_are_inline_pngs_in_html_and_files_next_to_md(rendered):
    ev, html_path = rendered
    pngs = _inline_pngs(html_path.read_text())
    assert len(pngs) == 5 and all(p.startswith(PNG_MAGIC) for p in pngs)
    md = (ev / "report.md").read_text()
    for name in ("plot_turn_length.png", "plot_disclosure_curve.png", "plot_drift.png", "plot_roc.png",
                 "plot_roc_neural.png"):
        assert f"]({name})" in md
    assert "src=\"file:" not in html_path.read_text() and "http" not in "".join(re.findall(r'src="([^"]*)"', html_path.read_text()))


def test_user_text_is_escaped(rendered):
    ev, html_path = rendered
    html = html_path.read_text()
    assert HOSTILE_TEXT not in html and "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    md = (ev / "report.md").read_text()
    assert "<script>" not in md and "a\\|b" in md


def test_examples_side_by_side(rendered):
    _, html_path = rendered
    html = html_path.read_text()
    assert html.count('class="example"') == 8
    assert "simulated turn 3: maybe hiking w my dog" in html
    assert "As an AI language model, I would be happy to help with turn 3." in html
    assert "Not much! Any plans for the weekend? (3)" in html


def test_flags_are_prominent(tmp_path):
    ev = write_tree(tmp_path, flags=["human_vs_human accuracy 0.71 [0.66, 0.75] excludes 0.5"])
    html = render_report(ev).read_text()
    assert 'class="banner flagged"' in html and "excludes 0.5" in html
    assert html.index("excludes 0.5") < html.index("<h2>Headline</h2>")
    assert "Controls flagged (1)" in (ev / "report.md").read_text()


def test_missing_optional_parts_render_not_computed(tmp_path):
    ev = write_tree(tmp_path, neural=False, with_plots=False, with_samples=False)
    html = render_report(ev).read_text()
    assert re.search(r"Neural discriminator accuracy</td><td class=\"num\">not computed", html)
    assert "<img" not in html and html.count("not computed") >= 6
    assert not list(ev.glob("plot_*.png"))


def test_malformed_plot_data_is_skipped_not_fatal(tmp_path):
    ev = write_tree(tmp_path)
    (ev / "plots.json").write_text(json.dumps({"turn_length": {"human": "oops"}, "roc": {"fpr": [0, 1], "tpr": [0]},
                                               "drift": [1, 2], "disclosure_curve": None}))
    html = render_report(ev).read_text()
    assert "<img" not in html and "Discriminator ROC: not computed" in html


def test_output_dir_gets_metrics_copy(tmp_path):
    ev = write_tree(tmp_path / "run")
    out = tmp_path / "out"
    assert cli([str(ev), "--output", str(out), "--examples", "2"]) == 0
    assert (out / "metrics.json").read_bytes() == (ev / "metrics.json").read_bytes()
    assert (out / "report.html").read_text().count('class="example"') == 2
    assert not (ev / "report.html").exists()


def test_cli_without_eval_run_fails_clearly(tmp_path, capsys):
    assert cli([str(tmp_path)]) == 1
    assert "usersim eval" in capsys.readouterr().err


def test_metric_table_falls_back_to_human_system_row():
    rows = [{"name": "x", "system": "simulator", "group": "g", "value": 1.0, "human_reference": None},
            {"name": "x", "system": "human", "group": "g", "value": 2.0, "human_reference": None}]
    (line,) = metric_table(rows)
    assert line["human"] == "2" and line["base"] == "not computed" and line["direction"] == "match human"


def test_md_cell_keeps_tables_intact():
    assert md_cell("a|b\nc <i>") == "a\\|b ⏎ c &lt;i&gt;"


def test_plot_shapes():
    assert plot_turn_length({"bins": [0, 5, 10], "human": [3, 1], "simulator": [2, 2]}) is not None
    assert plot_turn_length({"bins": [0, 5, 10], "human": [3]}) is None  # counts do not fit the bins
    assert plot_drift({"simulator": {"x": [0, 1], "mean": [0.1, 0.2], "ci_low": [0, 0.1], "ci_high": [0.2, 0.3]}})
    assert plot_roc({"fpr": [0, 1], "tpr": [0, 1], "auc": 0.5}) is not None
    assert plot_roc({"simulator": {"auc": 0.5}}) is None
    assert [p.png is None for p in render_plots({})] == [True] * 5


# ----------------------------------------------------------------------------- headless Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]
# Written into a copy of the report (the report itself has no script): after load, record every
# image's decoded width in the DOM so that --dump-dom shows whether the PNGs decoded.
IMG_PROBE = ("<script>window.addEventListener('load', function () {"
             "var w = Array.prototype.map.call(document.images, function (i) { return i.naturalWidth; });"
             "document.body.setAttribute('data-img-widths', w.join(','));});</script>")


# Injected at the top of <head> of the same copy: console.error and any uncaught error or failed
# resource load become lines that _console_errors finds in Chromium's stderr log.
ERROR_PROBE = ("<script>(function () { var e = console.error; console.error = function () {"
               "e.apply(console, ['ERROR:CONSOLE'].concat(Array.prototype.slice.call(arguments))); };"
               "window.addEventListener('error', function (ev) { console.log('Uncaught ' + (ev.message || "
               "('resource failed: ' + (ev.target && (ev.target.src || ev.target.href))))); }, true); })();</script>")


def _probe_copy(html: str, path: Path) -> Path:
    path.write_text(html.replace("<head>", "<head>" + ERROR_PROBE, 1).replace("</body>", IMG_PROBE + "</body>"))
    return path


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed in CI: .ci/run must install it (apt-get install -y chromium)")
    pytest.skip("chromium not installed (apt-get install -y chromium); the rendering test needs it")


def _run_chromium(binary: str, profile: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line
            or ("CONSOLE" in line and "error" in line.lower())]


def test_report_renders_in_headless_chromium(rendered, tmp_path):
    import numpy as np
    from PIL import Image

    binary = _chromium()
    _, html_path = rendered
    shot = tmp_path / "report.png"
    result = _run_chromium(binary, tmp_path / "profile1",
                           [f"--screenshot={shot}", "--window-size=1280,2000", html_path.as_uri()])
    assert shot.is_file(), result.stderr[-2000:]
    assert not _console_errors(result.stderr)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    small = image.resize((320, 500))
    pixels = np.asarray(small).reshape(-1, 3)
    non_white = float((pixels.min(axis=1) < 235).mean())
    assert non_white > 0.05, f"page looks blank ({non_white:.1%} non-white)"
    assert len(np.unique(pixels, axis=0)) > 100, "page has too few colours to be the rendered report"

    probe = _probe_copy(html_path.read_text(), tmp_path / "probe.html")
    dom = _run_chromium(binary, tmp_path / "profile2", ["--dump-dom", "--virtual-time-budget=5000", probe.as_uri()])
    assert not _console_errors(dom.stderr)
    widths = re.search(r'data-img-widths="([0-9,]*)"', dom.stdout)
    assert widths, "the image probe did not run: " + dom.stderr[-2000:]
    decoded = [int(w) for w in widths.group(1).split(",") if w]
    assert len(decoded) == 5 and all(w > 100 for w in decoded), decoded


def test_chromium_checks_catch_a_broken_page(tmp_path):
    """The checks above can fail: a page with a script error, a console error and a broken image."""
    binary = _chromium()
    bad = '<html><head></head><body><img src="data:image/png;base64,AAAA"><script>undefinedFn();</script>' \
          '<script>console.error("boom")</script></body></html>'
    probe = _probe_copy(bad, tmp_path / "bad.html")
    dom = _run_chromium(binary, tmp_path / "profile", ["--dump-dom", "--virtual-time-budget=5000", probe.as_uri()])
    errors = _console_errors(dom.stderr)
    assert any("undefinedFn" in e for e in errors) and any("boom" in e for e in errors)
    assert any("resource failed" in e for e in errors)
    assert 'data-img-widths="0"' in dom.stdout


def test_known_flag_is_explained_and_failed_control_marked(tmp_path):
    ev = write_tree(tmp_path, flags=["discriminator_no_power"])
    doc = json.loads((ev / "metrics.json").read_text())
    doc["controls"]["non_human"]["neural"]["passed"] = False
    (ev / "metrics.json").write_text(json.dumps(doc))
    html = render_report(ev).read_text()
    assert "discriminator_no_power: text known to be non-human was not reliably caught" in html
    assert html.count('<tr class="failed">') == 1
    assert "| non human | neural | 0.97 [0.935, 1] |" in (ev / "report.md").read_text()
    assert "**FAILED**" in (ev / "report.md").read_text()


def test_missing_chromium_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install"):
        _chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium not installed"):
        _chromium()
