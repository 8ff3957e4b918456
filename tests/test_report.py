"""usersim.eval.report / usersim.eval.plots: report.html + report.md rendered from an eval run, checked as text and in Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from usersim.eval.failure_mode_table import FAILURE_MODES, failure_mode_lines
from usersim.eval.plots import failure_mode_chart, plot_drift, plot_roc, plot_turn_length, render_plots
from usersim.eval.report import cli, md_cell, metric_table, render_report
from synthetic_eval_run import HEADLINES, HOSTILE_TEXT, write_tree

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def rendered(tmp_path):
    ev = write_tree(tmp_path / "run")
    return ev, render_report(ev)


def _inline_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _headline_block(html: str) -> str:
    return html[html.index('<section class="headline'):html.index("</section>")]


def _failure_mode_table(html: str) -> str:
    return html[html.index('<table class="fm-table">'):html.index("</table>", html.index('<table class="fm-table">'))]


def test_report_opens_with_the_headline_sentence_and_numbers(rendered):
    ev, html_path = rendered
    html = html_path.read_text()
    md = (ev / "report.md").read_text()
    sentence = HEADLINES["distinguishable"]["sentence"]
    head = _headline_block(html)
    assert html.index('<section class="headline') < html.index('id="failure-modes"') < html.index('id="controls"')
    assert sentence in head and sentence in md.split("## Failure modes")[0]
    for text in (head, md.split("## Failure modes")[0]):
        assert "0.62" in text and "[0.552, 0.691]" in text  # accuracy [CI]
        assert "0.003" in text and "±0.137" in text and "[0.431, 0.569]" in text  # p, MDE, null band
        assert "104" in text and "38" in text  # pairs, users
        assert "distinguishable from held-out humans" in text
    assert "claimed ±0.1" in head and "fast judge" in head


@pytest.mark.parametrize("kwargs,colour,status", [
    ({"verdict": "indistinguishable"}, "green", "every control passed"),
    ({"verdict": "distinguishable"}, "neutral", "Distinguishable from held-out humans"),
    ({"verdict": "too_small_to_tell"}, "amber", "Too small to tell"),
    ({"verdict": "miscalibrated"}, "red", "Flagged"),
    ({"verdict": "indistinguishable", "flags": ["null_control_rejected"], "failed_controls": ("simulator_vs_itself",)},
     "red", "Flagged"),
    ({"verdict": "indistinguishable", "failed_controls": ("simulator_hot",), "flags": []}, "red", "Flagged"),
    ({"verdict": "too_small_to_tell", "flags": ["too_small_to_tell", "human_vs_human_rejected"],
      "failed_controls": ("human_vs_human",)}, "red", "Flagged"),
])
def test_headline_colour_rules(tmp_path, kwargs, colour, status):
    """Green only for 'indistinguishable' with every control passed; red on any flag or failed control; amber
    when too small to tell."""
    ev = write_tree(tmp_path, **kwargs)
    html = render_report(ev).read_text()
    head = _headline_block(html)
    assert f'<section class="headline {colour}"' in html and status in head
    assert html.count('class="headline ') == 1
    md = (ev / "report.md").read_text()
    mark = {"green": "🟢", "amber": "🟠", "red": "🔴", "neutral": "🔵"}[colour]
    assert md.split("## Headline")[1].lstrip().startswith(f"> {mark} **")


def test_each_flag_is_listed_in_words(tmp_path):
    flags = ["null_control_rejected", "human_vs_human_rejected", "no_power:simulator_hot", "headline_below_chance"]
    ev = write_tree(tmp_path, verdict="miscalibrated", flags=flags,
                    failed_controls=("simulator_vs_itself", "human_vs_human", "simulator_hot"))
    html = render_report(ev).read_text()
    head = _headline_block(html)
    assert "headline red" in html
    assert "null_control_rejected: the null control was told apart" in head
    assert "human_vs_human_rejected: two disjoint groups of held-out humans were told apart" in head
    assert "no_power:simulator_hot: the positive control &#39;simulator hot&#39; was not caught" in head
    assert "the trained simulator sampled at a high temperature" in head  # its description from metrics.json
    assert "headline_below_chance: the judge calls the simulated turn the real one" in head
    assert head.count("<li>") == 4  # each failed control is covered by its flag, not listed twice
    md = (ev / "report.md").read_text().split("## Failure modes")[0]
    assert md.count("\n> - ") == 4


def test_failed_control_without_a_flag_is_still_red_and_named(tmp_path):
    ev = write_tree(tmp_path, verdict="indistinguishable", failed_controls=("same_user_other_context",), flags=[])
    html = render_report(ev).read_text()
    assert "headline red" in html and "control &#39;same user other context&#39; failed" in _headline_block(html)
    controls = html[html.index('id="controls"'):html.index('id="paired"')]
    assert controls.count('<tr class="failed">') == 2  # fast and neural rows of that control
    assert controls.count('<td class="fail">FAILED</td>') == 2 and '<td class="pass">passed</td>' in controls


def test_too_small_to_tell_is_amber_and_says_why(tmp_path):
    ev = write_tree(tmp_path, verdict="too_small_to_tell")
    head = _headline_block(render_report(ev).read_text())
    assert "headline amber" in render_report(ev).read_text()
    assert "too_small_to_tell: not significant, but this run cannot detect gaps smaller than ±0.163" in head
    assert "more than the ±0.1 the report claims to resolve" in head


def test_failure_mode_table_rows_and_columns(rendered):
    ev, html_path = rendered
    html = html_path.read_text()
    table = _failure_mode_table(html)
    header = table[:table.index("</tr>")]
    assert re.findall(r"<th[^>]*>([^<]+)</th>", header) == [
        "failure mode", "metric", "humans", "trained simulator", "untuned base", "prompted LLM as user"]
    for mode in FAILURE_MODES:
        assert table.count(f'data-mode="{mode.key}"') == len(mode.metrics), mode.key
        assert f"<b>{mode.label}</b>" in table
        for name in mode.metrics:
            assert f"<code>{name}</code>" in table
    # a rate beside the humans' own value, a distance beside the split-half floor, every system with its CI
    leak = table[table.index("<code>knowledge_leak_rate</code>"):]
    leak = leak[:leak.index("</tr>")]
    assert "human</span>0.02" in leak and "[0, 0.04]" in leak
    assert "0.05" in leak and "[0.03, 0.07]" in leak and "0.38" in leak and "[0.36, 0.4]" in leak
    area = table[table.index("<code>disclosure_area_between_curves</code>"):]
    area = area[:area.index("</tr>")]
    assert "split-half floor</span>0.06" in area and "[0.4, 0.46]" in area
    assert "no human reference" in table  # sample_self_similarity: humans write one turn per context
    md = (ev / "report.md").read_text()
    assert ("| **too knowledgeable** | `knowledge_leak_rate` | human 0.02 [0, 0.04] | 0.05 [0.03, 0.07] | "
            "0.09 [0.07, 0.11] | 0.38 [0.36, 0.4] |") in md
    assert "|  | `lexical_diversity_mattr_abs_diff` | split-half floor 0.018  |" in md


def test_failure_mode_chart_sits_beside_the_table(rendered):
    ev, html_path = rendered
    html = html_path.read_text()
    fm = html[html.index('<div class="fm">'):html.index('id="controls"')]
    assert '<table class="fm-table">' in fm and 'id="plot-failure_modes"' in fm
    (png,) = _inline_pngs(fm)
    assert png.startswith(PNG_MAGIC)
    assert (ev / "plot_failure_modes.png").read_bytes() == png
    assert "](plot_failure_modes.png)" in (ev / "report.md").read_text()


def test_without_prompted_the_column_is_gone(tmp_path):
    ev = write_tree(tmp_path, with_prompted=False)
    html = render_report(ev).read_text()
    assert "prompted LLM as user" not in _failure_mode_table(html)
    assert 'class="turn prompted"' not in html
    assert "not scored: another tokenizer" not in html


def test_controls_paired_and_perplexity_sections(rendered):
    ev, html_path = rendered
    html = html_path.read_text()
    controls = html[html.index('id="controls"'):html.index('id="paired"')]
    for name in ("simulator vs itself", "same user other context", "base", "simulator hot"):
        assert f"<td>{name}</td>" in controls
    assert "null (must sit at chance)" in controls and "positive (must be caught)" in controls
    assert "0.507 [0.45, 0.565]" in controls and "220 + 214 turns, 62 users" in controls  # human vs human
    paired = html[html.index('id="paired"'):html.index('id="perplexity"')]
    assert paired.count("<tr>") == 1 + 6 + 1 + 2  # header, 3 systems x 2 judges, differences header + 2
    assert "0.934 [0.889, 0.979]" in paired and "ended 8, capped 0, empty 0" in paired
    assert "-38.4 [-44.1, -33]" in paired and "simulator − base" in paired
    ppl = html[html.index('id="perplexity"'):html.index('id="copy-rate"')]
    assert "23.4 [22.2, 24.6]" in ppl and "61.8 [58.7, 64.9]" in ppl
    assert "not scored: another tokenizer" in ppl
    copy = html[html.index('id="copy-rate"'):html.index('id="truncation"')]
    assert "held-out humans" in copy and "0.061 [0.058, 0.064]" in copy
    trunc = html[html.index('id="truncation"'):html.index("<h2>Other figures")]
    assert ('<td>untuned base</td><td class="num">17</td><td class="num">18</td><td class="num">0</td>'
            '<td class="num">2</td>') in trunc
    assert '<td>held-out humans</td><td class="num">—</td><td class="num">11</td>' in trunc
    assert "Of 130 items" in trunc and "compared on its first 64 tokens" in trunc


def test_every_metric_has_a_row_with_reference_and_direction(rendered):
    ev, html_path = rendered
    html = html_path.read_text()
    md = (ev / "report.md").read_text()
    rows = json.loads((ev / "metrics.json").read_text())["metrics"]
    for name in {r["name"] for r in rows}:
        assert f"<td>{name}</td>" in html
        assert f"| {name} |" in md
    assert ("| behaviour | turn_length | 11.2 [10.5, 11.9] | 34.5 [32.4, 36.6] | 41 [38.5, 43.5] | 9.8 [9.21, 10.4] "
            "| match human |") in md
    assert "| behaviour | turn_length_ks | 0.16 [0.112, 0.208] | 0.58 [0.406, 0.754] | 0.66 [0.462, 0.858] | floor 0.11 |" in md
    assert "↓ lower is better" in html and "↑ higher is better" in html


def test_plots_are_inline_pngs_in_html_and_files_next_to_md(rendered):
    ev, html_path = rendered
    pngs = _inline_pngs(html_path.read_text())
    assert len(pngs) == 4 and all(p.startswith(PNG_MAGIC) for p in pngs)
    md = (ev / "report.md").read_text()
    for name in ("plot_failure_modes.png", "plot_turn_length.png", "plot_disclosure_curve.png", "plot_drift.png"):
        assert f"]({name})" in md and (ev / name).is_file()
    assert "src=\"file:" not in html_path.read_text() and "http" not in "".join(re.findall(r'src="([^"]*)"', html_path.read_text()))


def test_user_text_is_escaped(rendered):
    ev, html_path = rendered
    html = html_path.read_text()
    assert HOSTILE_TEXT not in html and "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    md = (ev / "report.md").read_text()
    assert "<script>" not in md and "a\\|b" in md


def test_markup_in_metrics_json_is_escaped_too(tmp_path):
    ev = write_tree(tmp_path)
    doc = json.loads((ev / "metrics.json").read_text())
    doc["headline"]["sentence"] = "At n = 5 <img src=x onerror=alert(1)> pairs"
    doc["controls"]["description"]["simulator_hot"] = "<b>hot</b>"
    doc["controls"]["flags"] = ["no_power:simulator_hot"]
    (ev / "metrics.json").write_text(json.dumps(doc))
    html = render_report(ev).read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>hot</b>" not in html
    assert "<img src=x" not in (ev / "report.md").read_text()


def test_examples_side_by_side(rendered):
    _, html_path = rendered
    html = html_path.read_text()
    assert html.count('class="example"') == 8
    example = html.split('class="example"')[4]  # item 3
    turns = re.findall(r'<div class="turn (\w+)">', example)
    assert turns == ["human", "simulator", "base", "prompted"]
    assert "human turn 3: yeah i think so lol" in example
    assert "simulated turn 3: maybe hiking w my dog" in example
    assert "2020 3GW4A9L08X6Ym 3 12345678901234567890" in example
    assert "Certainly! Here are some weekend ideas for turn 3:" in example
    assert "Not much! Any plans for the weekend? (3)" in example
    assert "cut at the token cap" in example  # the base hit the cap
    assert example.index("human turn 3") < example.index("simulated turn 3") < example.index("2020 3GW4") \
        < example.index("Certainly!")
    capped_sim = html.split('class="example"')[6]  # item 5: the simulator was capped too
    assert capped_sim.count("cut at the token cap") == 2


def test_examples_in_markdown_are_one_table_row_per_item(rendered):
    ev, _ = rendered
    md = (ev / "report.md").read_text()
    assert "| human (the real next turn) | trained simulator | untuned base | prompted LLM as user |" in md
    assert "| human turn 3: yeah i think so lol | simulated turn 3: maybe hiking w my dog | " in md
    assert "Certainly! Here are some weekend ideas for turn 3: ⏎ 1. Go hiking ⏎ 2. Visit a museum |" in md


def test_missing_optional_parts_render_not_computed(tmp_path):
    ev = write_tree(tmp_path, neural=False, with_plots=False, with_samples=False)
    doc = json.loads((ev / "metrics.json").read_text())
    for key in ("headline", "truncation", "paired_differences"):
        doc.pop(key)
    (ev / "metrics.json").write_text(json.dumps(doc))
    html = render_report(ev).read_text()
    assert "headline grey" in html
    assert html.count("<img") == 1  # only the failure-mode chart, drawn from metrics.json
    assert html.count("not computed") >= 5
    assert not [p for p in ev.glob("plot_*.png") if p.name != "plot_failure_modes.png"]


def test_malformed_plot_data_is_skipped_not_fatal(tmp_path):
    ev = write_tree(tmp_path)
    (ev / "plots.json").write_text(json.dumps({"turn_length": {"human": "oops"}, "roc": {"fpr": [0, 1], "tpr": [0]},
                                               "drift": [1, 2], "disclosure_curve": None}))
    html = render_report(ev).read_text()
    assert html.count("<img") == 1 and "Discriminator ROC: not computed" in html
    assert "Turn-length distributions: not computed" in html


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


def test_synthetic_run_follows_the_metrics_contract(tmp_path):
    from metrics_contract import validate_metrics_json

    validate_metrics_json(json.loads((write_tree(tmp_path) / "metrics.json").read_text()))


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
    assert [p.key for p in render_plots({})] == ["turn_length", "disclosure_curve", "drift"]
    assert all(p.png is None for p in render_plots({}))


def test_failure_mode_chart_from_rows_only():
    rows = [{"name": "knowledge_leak_rate", "system": s, "value": v, "ci_low": v - 0.01, "ci_high": v + 0.01}
            for s, v in (("human", 0.02), ("simulator", 0.05))]
    lines = failure_mode_lines(rows)
    assert lines[0].chart_metric.reference.kind == "human"
    assert [line.chart_metric for line in lines[1:]] == [None] * (len(FAILURE_MODES) - 1)
    assert failure_mode_chart(lines, ["simulator", "base"]).png.startswith(PNG_MAGIC)
    assert failure_mode_chart(failure_mode_lines([]), ["simulator", "base"]).png is None


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


# Layout probe for the report itself: where the headline, the failure-mode table and its chart land.
LAYOUT_PROBE = ("<script>window.addEventListener('load', function () {"
                "function box(sel) { var r = document.querySelector(sel).getBoundingClientRect();"
                "return [r.left, r.top, r.right, r.bottom].map(Math.round).join(' '); }"
                "document.body.setAttribute('data-layout', ['#headline', '.fm-table', '#plot-failure_modes']"
                ".map(box).join(';'));});</script>")


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
    assert len(decoded) == 4 and all(w > 100 for w in decoded), decoded

    # the page opens with the headline (its blue band fills the top of the first screen) ...
    top = np.asarray(image.crop((40, 100, 1240, 300))).reshape(-1, 3).astype(int)
    assert float((np.abs(top - (233, 240, 250)).max(axis=1) <= 3).mean()) > 0.5, "no headline band at the top"
    # ... and the failure-mode chart sits beside its table, both within the first screen
    layout = _run_chromium(binary, tmp_path / "profile3", ["--dump-dom", "--virtual-time-budget=5000", (
        _probe_copy(html_path.read_text().replace("</body>", LAYOUT_PROBE + "</body>"), tmp_path / "layout.html")
    ).as_uri(), "--window-size=1280,2000"])
    boxes = re.search(r'data-layout="([^"]*)"', layout.stdout)
    assert boxes, layout.stderr[-2000:]
    head, table, chart = ([int(v) for v in b.split()] for b in boxes.group(1).split(";"))
    assert head[3] <= table[1] and chart[0] >= table[2] and abs(chart[1] - table[1]) < 40, (head, table, chart)
    assert table[1] < 900 and chart[1] < 900


# Width probe: the widest extent of the page's content (body box and every element's right edge).
WIDTH_PROBE = ("<script>window.addEventListener('load', function () {"
               "var right = document.body.getBoundingClientRect().right - document.body.getBoundingClientRect().left;"
               "document.querySelectorAll('body *').forEach(function (e) {"
               "right = Math.max(right, e.getBoundingClientRect().right - document.body.getBoundingClientRect().left); });"
               "document.body.setAttribute('data-width', Math.ceil(right));});</script>")


def _page_width(binary: str, html: str, tmp_path: Path, name: str) -> int:
    page = tmp_path / f"{name}.html"
    page.write_text(html.replace("</body>", WIDTH_PROBE + "</body>"))
    dom = _run_chromium(binary, tmp_path / f"profile-{name}", ["--dump-dom", "--virtual-time-budget=5000",
                                                                "--window-size=1600,2000", page.as_uri()])
    found = re.search(r'data-width="([0-9]+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    return int(found.group(1))


def test_report_fits_a_1280_px_screen(rendered, tmp_path):
    """On a wide window the page's content (padding included) is at most 1,280 px wide, and a turn with a long
    unbroken string (a URL, a pasted hash) wraps instead of widening the page."""
    binary = _chromium()
    _, html_path = rendered
    html = html_path.read_text()
    assert _page_width(binary, html, tmp_path, "report") <= 1280
    long_cell = html.replace("</h1>", "</h1><table><tr><td>" + "x" * 600 + "</td></tr></table>", 1)
    assert _page_width(binary, long_cell, tmp_path, "long") <= 1280
    # the probe can fail: a page that asks for 1,400 px is measured as such
    assert _page_width(binary, "<html><body><div style='width:1400px'>wide</div></body></html>", tmp_path,
                       "wide") >= 1400


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


def test_missing_chromium_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install"):
        _chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium not installed"):
        _chromium()
