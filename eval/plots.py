"""The report's figures, drawn with matplotlib (Agg) from ``plots.json`` and nothing else.

``plots.json`` (written by ``usersim eval``) holds the data behind each figure; these functions only
draw it. Shapes accepted (per system: ``human``, ``simulator``, ``base``):

- ``turn_length``: ``{system: [length, ...]}`` (raw lengths, drawn as histograms on shared bins), or
  ``{"bins": [edges], system: [counts]}`` (already binned);
- ``disclosure_curve`` / ``drift``: ``{"turn_index": [x...], system: [y...]}``, or
  ``{system: {"x"|"turn_index": [...], "y"|"mean": [...], "ci_low": [...], "ci_high": [...]}}``;
- ``roc`` / ``roc_neural``: ``{system: {"fpr": [...], "tpr": [...], "auc": a}}`` or one ``{"fpr", "tpr", "auc"}``.

A figure whose data is missing or malformed is skipped (the report says "not computed").
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
    "instruct": {"color": "#2ca02c", "label": "instruct (prompted)"},
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
    """Systems in a fixed order (human, simulator, base), then any others."""
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
                    "Length of user turns: held-out humans vs the trained simulator vs the untuned base.",
                    plot_turn_length),
    "disclosure_curve": ("Disclosure curve",
                         "Share of the user's known facts revealed by each turn. Humans reveal gradually; "
                         "a spoon-feeding simulator front-loads.", plot_disclosure_curve),
    "drift": ("Drift by turn index",
              "Share of the condition's style buckets (length, casing, punctuation, emoji, typos) each turn "
              "misses, by turn index; a curve that rises where the human one stays flat is persona drift.", plot_drift),
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


def render_plots(plots_json: dict[str, Any]) -> list[Plot]:
    """One ``Plot`` per known key, in report order; ``png`` is None where the data is absent."""
    out = []
    for key, (title, caption, draw) in PLOTS.items():
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
