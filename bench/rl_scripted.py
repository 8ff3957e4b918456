"""What the elicitation reward can reach, and how each user discloses: scripted assistants against both users.

    .venv/bin/python -m bench.rl_scripted --run runs/default        (after make all; a few minutes on 2 cores)

The cross-simulator study (bench/rl_cross.py) scored every cell at the turn-cost floor: no policy drew out
a fact after asking. Before training longer, this asks whether the task can pay at all, and what each user
does when asked or not asked. Fixed assistant scripts, no learning, play the study's held-out test
scenarios (``elicitation_scenarios``, same seed) for ``--max_turns`` turns against the trained simulator
and against the prompted user, with the same per-episode seeds for every script and user:

* ``invite``: an open invitation every turn ("... Tell me more about yourself?"): by the reward's rule
  (usersim.rl.rewards.asks_for) it asks for every fact, so it is the reward's ceiling for a policy that
  knows nothing about the user;
* ``acknowledge``: never asks ("I see."): every fact that comes out is volunteered.

Per script and user: the mean ``elicited_after_asking`` reward with a 95% CI (bootstrap over scenarios),
the share of the scenario's ``knowledge_discloses`` facts that came out at all (any user turn, the
opening one included), the share that came out unasked (volunteered: the spoon-feeding the seed warns
about), and how often the user ended the episode. The scripts are read against each other: in the real
conversations every fact came out somewhere (that is where the condition took it from), so 1 is no
reference for a 3-turn episode.

Writes bench/results/rl_scripted.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "invite": "That's interesting! Tell me more about yourself?",
    "acknowledge": "I see.",
}


def disclosure(transcript: Any, facts: Sequence[str]) -> tuple[float, float]:
    """(share of facts disclosed in any user turn, share disclosed first in a turn no asking question preceded)."""
    from usersim.rl.rewards import fact_disclosures

    found = fact_disclosures(transcript, facts)
    if not found:
        return float("nan"), float("nan")
    return sum(f is not None for f in found) / len(found), sum(f is False for f in found) / len(found)


def play(user: Any, scenarios: list[Any], script: str, args: argparse.Namespace) -> dict[str, Any]:
    from usersim.rl.env import BatchUserSimEnv
    from usersim.simulator import derive_seed

    env = BatchUserSimEnv(user, scenarios, max_turns=args.max_turns, rewards={"elicited_after_asking": 1.0},
                          generation={"max_new_tokens": args.user_tokens})
    seeds = [derive_seed(args.seed, "scripted", s.id) for s in scenarios]
    env.reset(seeds=seeds, scenarios=scenarios)
    while any(env.live):
        env.step([SCRIPTS[script] if live else None for live in env.live])
    rewards = np.array([ep.reward for ep in env.episodes], float)
    shares = np.array([disclosure(ep.transcript, ep.scenario.condition.knowledge_discloses) for ep in env.episodes])
    rng = np.random.default_rng(args.seed)

    def ci(values: np.ndarray) -> list[float]:
        boots = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(args.n_boot)]
        return [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]

    return {"mean_reward": float(rewards.mean()), "ci": ci(rewards),
            "disclosed": float(np.nanmean(shares[:, 0])), "disclosed_ci": ci(shares[:, 0]),
            "volunteered": float(np.nanmean(shares[:, 1])), "volunteered_ci": ci(shares[:, 1]),
            "ended_by_user": float(np.mean([ep.transcript.ended_by_user for ep in env.episodes])),
            "n_scenarios": len(scenarios),
            "example": [dict(t) for t in env.episodes[0].transcript.turns]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from bench.rl_cross import USERS, elicitation_scenarios, load_users

    p = argparse.ArgumentParser(prog="bench.rl_scripted", description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/default", help="a `make all` run root (RUN/train, RUN/data)")
    p.add_argument("--prompted_model", default="smollm2", help="the prompted user's model (smollm2 or a local dir)")
    p.add_argument("--scenarios", type=int, default=32, help="test-user scenarios (rl_cross's --eval_scenarios)")
    p.add_argument("--max_turns", type=int, default=3, help="assistant messages per episode")
    p.add_argument("--user_tokens", type=int, default=32, help="cap on one user turn")
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "rl_scripted.json"))
    args = p.parse_args(argv)

    started = time.time()
    scenarios = elicitation_scenarios(str(Path(args.run) / "data"), "test", args.scenarios, args.seed)
    users = load_users(args)
    table: dict[str, dict[str, Any]] = {}
    for script in SCRIPTS:
        table[script] = {}
        for user_name in USERS:
            r = table[script][user_name] = play(users[user_name], scenarios, script, args)
            print(f"[rl_scripted] {script} vs {user_name}: reward {r['mean_reward']:.3f} [{r['ci'][0]:.3f}, "
                  f"{r['ci'][1]:.3f}], disclosed {r['disclosed']:.2f}, volunteered {r['volunteered']:.2f}, "
                  f"ended {r['ended_by_user']:.2f}", flush=True)
    result = {"table": table, "scripts": SCRIPTS, "settings": {k: v for k, v in vars(args).items() if k != "output"},
              "seconds": round(time.time() - started, 1),
              "command": "python -m bench.rl_scripted " + " ".join(argv or [])}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
