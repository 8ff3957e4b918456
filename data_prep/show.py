"""``usersim show DATA_DIR --record N [--split train] [--no-color]``: one record, supervised spans highlighted.

Renders the record exactly as training does (``render_simulator_prompt``) and prints it with
``visualize_segments``: supervised text (every user turn + EOS, and the end-of-conversation
marker) is green, or bracketed as ``⟦...⟧`` with ``--no-color``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from usersim.data_prep.prompt_format import Condition, render_simulator_prompt, visualize_segments
from usersim.data_prep.schema import Turn

RECORD_SPLITS = ("train", "validation", "test")


def render_record(row: dict[str, Any], color: bool = True) -> str:
    segments = render_simulator_prompt(Condition.from_row(row["condition"]),
                                       [Turn(t["role"], t["text"]) for t in row["turns"]],
                                       end_of_conversation=row["end_of_conversation"])
    return visualize_segments(segments, color=color)


def show(data_dir: str | Path, record: int, split: str = "train", color: bool = True) -> str:
    from datasets import load_from_disk

    path = Path(data_dir) / "dataset"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found; run `usersim data --output_dir {data_dir}` first")
    ds = load_from_disk(str(path))
    if split not in ds:
        raise KeyError(f"split {split!r} not in {path}; available: {', '.join(ds)}")
    if not 0 <= record < len(ds[split]):
        raise IndexError(f"--record {record} out of range: split {split!r} has {len(ds[split])} records")
    row = ds[split][record]
    header = f"# {split}[{record}] id={row['id']} user_id={row['user_id']} source={row['source']}\n"
    return header + render_record(row, color=color)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="usersim show", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="a `usersim data` run directory")
    parser.add_argument("--record", type=int, default=0, help="row index in the split")
    parser.add_argument("--split", default="train", choices=RECORD_SPLITS)
    parser.add_argument("--no-color", dest="color", action="store_false", help="bracket spans as ⟦...⟧ instead")
    args = parser.parse_args(argv)
    try:
        print(show(args.data_dir, args.record, args.split, color=args.color))
    except (FileNotFoundError, KeyError, IndexError) as err:
        print(f"usersim show: {err}", file=sys.stderr)
        return 2
    return 0
