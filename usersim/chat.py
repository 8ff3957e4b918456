"""``usersim chat RUN_DIR``: you type the assistant's turns, the simulator answers as the user.

    usersim chat runs/default/train --goal "plan a weekend hike" --knows "I have two dogs" \\
        --asks "a good trail nearby" --style length=short,casing=lower --seed 0
    usersim chat runs/default/train --user prompted      # the prompted baseline plays the user instead

``--user`` picks any simulated-user backend (usersim.users: simulator, base, prompted,
prompted-endpoint:URL, completions:URL).

The session runs until the simulated user ends the conversation, or you type ``/quit`` (or send
EOF, Ctrl-D). By default the simulated user speaks first, as in real chats (``--no-user-first``:
you open). Plain stdin/stdout, no readline, so it can be driven by a pipe. Turn ``t`` samples with
``derive_seed(seed, t)``: the same seed and the same assistant turns give the same conversation.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, TextIO

from usersim.data_prep.prompt_format import STYLE_KEYS, Condition
from usersim.data_prep.schema import ASSISTANT, USER, Turn
from usersim.simulator import derive_seed, make_condition
from usersim.users import USER_BACKENDS, load_user

QUIT = "/quit"
END_LINE = "[the simulated user ended the conversation]"
QUIT_LINE = "[chat closed]"
USER_LABEL = "User (simulated): "
ASSISTANT_PROMPT = "Assistant (you): "


def parse_style(text: str | None) -> dict[str, str]:
    """``length=short,casing=lower`` -> ``{"length": "short", "casing": "lower"}`` (keys checked)."""
    style: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise ValueError(f"style part {part!r} is not key=value (e.g. length=short,casing=lower)")
        if key not in STYLE_KEYS:
            raise ValueError(f"style key {key!r} unknown; known: {', '.join(STYLE_KEYS)}")
        style[key] = value
    return style


def run_chat(sim: Any, condition: Condition, *, read_line: Callable[[], str] | None = None,
             out: TextIO | None = None, seed: int = 0, user_first: bool = True,
             max_new_tokens: int = 64, echo: bool = False, **generation: Any) -> list[Turn]:
    """The chat loop against any simulated user (usersim.users); returns the conversation.

    ``read_line`` returns one line ('' at EOF).

    ``echo`` repeats each line read after the prompt (for piped stdin, so the transcript reads
    like the conversation).
    """
    stdin_readline = sys.stdin.readline
    read_line = read_line or stdin_readline
    out = out or sys.stdout
    history: list[Turn] = []

    def simulator_speaks() -> bool:
        turn = sim.respond_batch([history], [condition], seed=[derive_seed(seed, len(history))],
                                 max_new_tokens=max_new_tokens, **generation)[0]
        if turn.ends_conversation:
            print(END_LINE, file=out, flush=True)
            return False
        history.append(Turn(USER, turn.text))
        print(USER_LABEL + turn.text, file=out, flush=True)
        return True

    print(f"You play the assistant. Type {QUIT} (or Ctrl-D) to stop.", file=out, flush=True)
    if user_first and not simulator_speaks():
        return history
    while True:
        print(ASSISTANT_PROMPT, end="", file=out, flush=True)
        line = read_line()
        if echo and line:
            print(line.rstrip("\n"), file=out, flush=True)
        if not line:  # EOF
            print("\n" + QUIT_LINE, file=out, flush=True)
            return history
        text = line.strip()
        if text == QUIT:
            print(QUIT_LINE, file=out, flush=True)
            return history
        if not text:  # an empty assistant turn is not a turn; ask again
            continue
        history.append(Turn(ASSISTANT, text))
        if not simulator_speaks():
            return history


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="usersim chat", description="Talk to a user simulator: you play the assistant.")
    p.add_argument("run_dir", nargs="?", default="",
                   help="train run directory (or a published adapter repo id when online); not needed by --user prompted")
    p.add_argument("--user", default="simulator", metavar="BACKEND",
                   help=f"who plays the user: {', '.join(USER_BACKENDS)} (endpoints: NAME:URL; default simulator)")
    p.add_argument("--model", default="", help="the served model's name (prompted-endpoint, completions)")
    p.add_argument("--api-key-env", default="", help="NAME of the environment variable holding the endpoint's key")
    p.add_argument("--persona", default="", help="who the user is, e.g. 'country: US; student'")
    p.add_argument("--goal", default="", help="what the user came for")
    p.add_argument("--knows", action="append", default=[], help="a fact the user knows and may reveal (repeatable)")
    p.add_argument("--asks", action="append", default=[], help="something the user wants to find out (repeatable)")
    p.add_argument("--style", default="", help=f"comma-separated key=value, keys: {', '.join(STYLE_KEYS)}")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (turn t uses a seed derived from it)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest simulated turn, in tokens")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: the run's decoding.json, else 1.0)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: the run's decoding.json, "
                   "else 0.95)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--user-first", action=argparse.BooleanOptionalAction, default=True,
                   help="the simulated user speaks first (default; --no-user-first: you open)")
    p.add_argument("--base-model", default=None, help="override the base checkpoint named in base_model.json")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the checkpoint")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        condition = make_condition(args.persona, args.goal, {"discloses": args.knows, "asks": args.asks},
                                   parse_style(args.style))
    except ValueError as exc:
        print(f"usersim chat: {exc}", file=sys.stderr)
        return 2
    try:
        sim = None
        if args.user in ("simulator", "base") and args.run_dir:
            from usersim.simulator import UserSimulator

            sim = UserSimulator.from_pretrained(args.run_dir, base_model=args.base_model, device=args.device,
                                                trust_remote_code=args.trust_remote_code)
        user = load_user(args.user, run_dir=args.run_dir or None, model=args.model, api_key_env=args.api_key_env,
                         device=args.device, trust_remote_code=args.trust_remote_code, simulator=sim)
    except (OSError, ValueError) as exc:
        print(f"usersim chat: cannot load user {args.user!r} ({args.run_dir or 'no run dir'}): {exc}", file=sys.stderr)
        return 1
    generation = {"do_sample": not args.greedy, **{k: v for k, v in (("temperature", args.temperature),
                                                                      ("top_p", args.top_p)) if v is not None}}
    run_chat(user, condition, seed=args.seed, user_first=args.user_first, max_new_tokens=args.max_new_tokens,
             echo=not sys.stdin.isatty(), **generation)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
