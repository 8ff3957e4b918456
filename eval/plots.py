"""The report's figures, drawn with matplotlib (Agg) from ``plots.json`` and nothing else.

``plots.json`` (written by ``usersim eval``) holds the data behind each figure; these functions only
draw it. Shapes accepted (per system: ``human``, ``simulator``, ``base``, ``prompted``):

- ``turn_length``: ``{system: [length, ...]}`` (raw lengths, drawn as histograms on shared bins), or
  ``{"bins": [edges], system: [counts]}`` (already binned);
- ``disclosure_curve`` / ``drift``: ``{"turn_index": [x...], system: [y...]}``, or
  ``{system: {"x"|"turn_index": [...], "y"|"mean": [...], "ci_low": [...], "ci_high": [...]}}``;
- ``roc`` / ``roc_neural`` (older runs only; drawn when present): ``{system: {"fpr", "tpr", "auc"}}``.

A figure whose data is missing or malformed is skipped (the report says "not computed").

The failure-mode chart (:func:`failure_mode_chart`) is drawn from metrics.json's rows instead, as
selected by usersim.eval.failure_mode_table: for each failure mode, each system's stored value with its CI
beside the human value (with its CI) or the human split-half floor.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

SYSTEM_STYLE = {
    "human": {"color": "#222222", "label": "human (held out)"},
    "simulator": {"color": "#1f77b4", "label": "simulator (trained)"},
    "base": {"color": "#ff7f0e", "label": "base (untuned)"},
    "prompted": {"color": "#2ca02c", "label": "prompted LLM as user"},
}
X_KEYS = ("turn_index", "x", "turn", "index")
Y_KEYS = ("y", "mean", "value", "values", "rate")


@dataclass
class Plot:
    """One rendered figure."""

    key: str  # key in plots.json
    title: str
    caption: str
    png: bytes | None  # None = not computed

    @property
    def filename(self) -> str:
        return f"plot_{self.key}.png"

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png or b"").decode("ascii")


def _systems(data: dict[str, Any]) -> list[str]:
    """Systems in a fixed order (human, simulator, base, prompted), then any others."""
    known = [s for s in SYSTEM_STYLE if s in data]
    return known + [k for k in data if k not in SYSTEM_STYLE and k not in X_KEYS and k not in ("bins", "edges", "xlabel", "ylabel", "note")]


def _style(system: str) -> dict[str, str]:
    return SYSTEM_STYLE.get(system, {"color": "#9467bd", "label": system})


def _is_numbers(values: Any) -> bool:
    return isinstance(values, list) and len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _new_axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def plot_turn_length(data: Any) -> Figure | None:
    if not isinstance(data, dict):
        return None
    fig, ax = _new_axes("User turn length", data.get("xlabel", "words per turn"), "share of turns")
    edges = data.get("bins") or data.get("edges")
    drawn = False
    if _is_numbers(edges):
        for system in _systems(data):
            counts = data[system]
            if _is_numbers(counts) and len(counts) == len(edges) - 1:
                total = sum(counts) or 1
                ax.stairs([c / total for c in counts], edges, label=_style(system)["label"],
                          color=_style(system)["color"], linewidth=2)
                drawn = True
    else:
        series = {s: data[s] for s in _systems(data) if _is_numbers(data[s])}
        if series:
            high = max(max(v) for v in series.values())
            low = min(min(v) for v in series.values())
            bins = list(_linspace(low, high if high > low else low + 1, 31))
            for system, values in series.items():
                ax.hist(values, bins=bins, histtype="step", linewidth=2, density=False,
                        weights=[1 / len(values)] * len(values), color=_style(system)["color"],
                        label=f"{_style(system)['label']} (n={len(values)})")
            drawn = True
    if not drawn:
        return None
    ax.legend()
    return fig


def _linspace(low: float, high: float, n: int) -> list[float]:
    step = (high - low) / (n - 1)
    return [low + i * step for i in range(n)]


def _curve_series(data: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Normalise the accepted curve shapes to ``{system: {"x", "y", ["lo", "hi"]}}``."""
    shared_x = next((data[k] for k in X_KEYS if _is_numbers(data.get(k))), None)
    out = {}
    for system in _systems(data):
        value = data[system]
        if _is_numbers(value):
            x = shared_x if shared_x is not None and len(shared_x) == len(value) else list(range(len(value)))
            out[system] = {"x": x, "y": value}
        elif isinstance(value, dict):
            y = next((value[k] for k in Y_KEYS if _is_numbers(value.get(k))), None)
            if y is None:
                continue
            x = next((value[k] for k in X_KEYS if _is_numbers(value.get(k))), None)
            if x is None or len(x) != len(y):
                x = shared_x if shared_x is not None and len(shared_x) == len(y) else list(range(len(y)))
            series = {"x": x, "y": y}
            lo, hi = value.get("ci_low"), value.get("ci_high")
            if _is_numbers(lo) and _is_numbers(hi) and len(lo) == len(hi) == len(y):
                series.update(lo=lo, hi=hi)
            out[system] = series
    return out


def _plot_curve(data: Any, title: str, ylabel: str) -> Figure | None:
    if not isinstance(data, dict):
        return None
    series = _curve_series(data)
    if not series:
        return None
    fig, ax = _new_axes(title, data.get("xlabel", "user turn index"), data.get("ylabel", ylabel))
    for system, s in series.items():
        style = _style(system)
        ax.plot(s["x"], s["y"], marker="o", markersize=3, color=style["color"], label=style["label"])
        if "lo" in s:
            ax.fill_between(s["x"], s["lo"], s["hi"], color=style["color"], alpha=0.15)
    ax.legend()
    return fig


def plot_disclosure_curve(data: Any) -> Figure | None:
    return _plot_curve(data, "Disclosure curve (gradual reveal)", "share of known facts disclosed")


def plot_drift(data: Any) -> Figure | None:
    return _plot_curve(data, "Persona / style drift by turn", "share of requested style buckets missed")


def plot_roc(data: Any, title: str = "Discriminator ROC (real vs generated)") -> Figure | None:
    if not isinstance(data, dict):
        return None
    curves = {"simulator": data} if _is_numbers(data.get("fpr")) else {
        s: v for s, v in data.items() if isinstance(v, dict) and _is_numbers(v.get("fpr"))}
    curves = {s: c for s, c in curves.items() if _is_numbers(c.get("tpr")) and len(c["tpr"]) == len(c["fpr"])}
    if not curves:
        return None
    fig, ax = _new_axes(title, "false positive rate", "true positive rate")
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", label="chance (indistinguishable)")
    for system, c in curves.items():
        style = _style(system)
        auc = c.get("auc")
        label = style["label"] + (f", AUC {auc:.3f}" if isinstance(auc, (int, float)) else "")
        ax.plot(c["fpr"], c["tpr"], color=style["color"], label=label, linewidth=2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    return fig


# plots.json key -> (title, caption, drawing function)
PLOTS: dict[str, tuple[str, str, Callable[[Any], Figure | None]]] = {
    "turn_length": ("Turn-length distributions",
                    "Length of user turns: held-out humans vs the trained simulator, the untuned base and the "
                    "prompted LLM.",
                    plot_turn_length),
    "disclosure_curve": ("Disclosure curve",
                         "Share of the user's known facts revealed by each turn. Humans reveal gradually; "
                         "a spoon-feeding simulator front-loads.", plot_disclosure_curve),
    "drift": ("Drift by turn index",
              "Share of the condition's style buckets (length, casing, punctuation, emoji, typos) each turn "
              "misses, by turn index (a real turn against the buckets of the user's other turns); a curve that "
              "rises where the human one stays flat is persona drift.", plot_drift),
    "roc": ("Discriminator ROC",
            "Real-vs-generated discriminator (n-grams + style features) on held-out users, out of fold. "
            "The diagonal means indistinguishable.", plot_roc),
    "roc_neural": ("Neural discriminator ROC",
                   "The same with frozen MiniLM sentence embeddings + logistic regression.",
                   lambda data: plot_roc(data, "Neural discriminator ROC (MiniLM)")),
}


def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# Figures every run has; the others (ROC of older runs) are drawn only when plots.json holds them.
EXPECTED_PLOTS = ("turn_length", "disclosure_curve", "drift")


def render_plots(plots_json: dict[str, Any]) -> list[Plot]:
    """One ``Plot`` per figure, in report order; ``png`` is None where the data is absent or malformed."""
    out = []
    for key, (title, caption, draw) in PLOTS.items():
        if key not in EXPECTED_PLOTS and key not in plots_json:
            continue
        try:
            fig = draw(plots_json.get(key))
        except (TypeError, ValueError, KeyError):  # malformed data: say "not computed", don't crash
            fig = None
        out.append(Plot(key, title, caption, figure_png(fig) if fig is not None else None))
    return out


def write_plot_files(plots: list[Plot], out_dir: Path) -> list[Path]:
    """PNG files next to report.md (only the computed ones)."""
    paths = []
    for plot in plots:
        if plot.png is not None:
            path = Path(out_dir) / plot.filename
            path.write_bytes(plot.png)
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------- failure-mode chart
FAILURE_MODE_CAPTION = ("Each panel is one failure mode, drawn on its own metric's scale: a dot is a system's stored "
                        "value with its 95% CI. The black line is where humans are: the held-out humans' own value "
                        "(grey band: its CI), or for a distance the human split-half floor (dashed: the distance "
                        "between two disjoint groups of held-out humans at this n). The farther a dot from the "
                        "black line, the farther that system from people.")


def plot_failure_modes(lines: list[Any], systems: list[str]) -> Figure | None:
    """Small multiples, one per failure mode (``usersim.eval.failure_mode_table.FailureModeLine``)."""
    panels = [(line.mode.label, line.chart_metric) for line in lines if line.chart_metric is not None]
    if not panels:
        return None
    fig = Figure(figsize=(4.4, 0.3 + 0.98 * len(panels)), dpi=120, layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    ys = {s: len(systems) - 1 - i for i, s in enumerate(systems)}
    for ax, (label, metric) in zip(axes, panels):
        ref = metric.reference
        xs = []
        for system in systems:
            row = metric.systems.get(system) or {}
            value, lo, hi = row.get("value"), row.get("ci_low"), row.get("ci_high")
            color = _style(system)["color"]
            if not isinstance(value, (int, float)):
                ax.text(0.01, ys[system], "not computed", transform=ax.get_yaxis_transform(), va="center",
                        fontsize=7, color="#777777")
                continue
            xerr = None
            if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
                xerr = [[max(0.0, value - lo)], [max(0.0, hi - value)]]
                xs += [lo, hi]
            ax.errorbar([value], [ys[system]], xerr=xerr, fmt="o", color=color, capsize=3, markersize=5,
                        elinewidth=1.6)
            xs.append(value)
        if isinstance(ref.value, (int, float)):
            xs.append(ref.value)
            if ref.kind == "human":
                if isinstance(ref.ci_low, (int, float)) and isinstance(ref.ci_high, (int, float)):
                    ax.axvspan(ref.ci_low, ref.ci_high, color="#000000", alpha=0.10, linewidth=0)
                    xs += [ref.ci_low, ref.ci_high]
                ax.axvline(ref.value, color="#111111", linewidth=1.6)
            else:
                ax.axvline(ref.value, color="#111111", linewidth=1.5, linestyle="--" if ref.kind == "floor" else ":")
            ax.annotate({"human": "humans", "floor": "human floor", "target": "target"}.get(ref.kind, ""),
                        (ref.value, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -2),
                        textcoords="offset points", fontsize=7, va="top", color="#111111")
        ax.set_yticks(list(ys.values()), systems, fontsize=8)
        for tick, system in zip(ax.get_yticklabels(), systems):
            tick.set_color(_style(system)["color"])
        ax.set_ylim(-0.6, len(systems) + 0.3)  # a free lane on top for the reference's label
        if xs:
            low, high = min(xs + [0.0]), max(xs)
            pad = 0.06 * (high - low or 1.0)
            ax.set_xlim(low - pad if low < 0 else 0.0, high + pad)
        ax.set_title(f"{label}  ·  {metric.name}", fontsize=8.5, loc="left")
        ax.tick_params(axis="x", labelsize=7.5)
        ax.grid(axis="x", alpha=0.3)
    return fig


def failure_mode_chart(lines: list[Any], systems: list[str]) -> Plot:
    """The chart beside the failure-mode table (``png`` None when no failure-mode row is stored)."""
    try:
        fig = plot_failure_modes(lines, systems)
    except (TypeError, ValueError, KeyError):
        fig = None
    return Plot("failure_modes", "Failure modes: each system against humans", FAILURE_MODE_CAPTION,
                figure_png(fig) if fig is not None else None)
