"""The cross-simulator RL study: what training against our simulator teaches an assistant, beside a prompted user.

    .venv/bin/python -m bench.rl_cross --run runs/default       (make rl-study; after make all)

Design (after Suh et al., "Quantifying the Utility of User Simulators", arXiv 2605.09808): the same
small instruct policy is trained with GRPO (usersim.rl: multi-turn episodes, TRL's ``rollout_func``)

  (a) against the trained simulator of ``RUN/train`` (``user=simulator``), and
  (b) against the prompted instruct model playing the user (``user=prompted``),

with the same steps, seeds, scenarios and reward; then the untrained policy and both trained ones play
held-out scenarios against **both** users: a 3 x 2 table of mean reward with 95% CIs (bootstrap over
scenarios), plus each run's reward curve.

The task is elicitation (the seed's doctor example in miniature): scenarios are held-out users whose
condition holds facts they may disclose (``knowledge_discloses``); the reward is
``elicited_after_asking`` (usersim.rl.rewards): the share of those facts that come out right after the
assistant asked for them, minus a small cost per assistant turn. Training scenarios come from
validation users, evaluation scenarios from test users (no user in both). The policy is told the task in
its chat view's system message (``--policy_system``, default ``TASK_SYSTEM``). bench/rl_scripted.py shows
what the reward can reach with scripted assistants.

Writes bench/results/rl_cross.json (table, curves, settings, timings) and bench/results/rl_cross.png.
Sized by flags (steps, scenarios, episodes, turn caps); the defaults are a first CPU-sized guess that has
not been timed end to end yet.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
USERS = ("simulator", "prompted")
REWARD = {"elicited_after_asking": 1.0}
# the task the policy is told (its chat view's system message). Told or not, SmolLM2-135M never asked in a way the
# reward counts in the runs here (README, "The cross-simulator study"; bench/rl_scripted.py: what asking can earn)
TASK_SYSTEM = ("You are chatting with someone you want to get to know. Ask them about themselves: their life, "
               "work, family and interests.")


def elicitation_scenarios(data_dir: str, split: str, n: int, seed: int) -> list[Any]:
    """Scenarios of ``split`` whose condition lists facts to disclose (the task needs them), user opens."""
    from usersim.rl.scenarios import scenarios_from_dataset

    pool = [s for s in scenarios_from_dataset(data_dir, split, None, seed, "user") if s.condition.knowledge_discloses]
    if len(pool) < 2:
        raise ValueError(f"only {len(pool)} {split} scenarios list facts to disclose: the elicitation task needs more")
    import random

    return sorted(random.Random(seed).sample(pool, min(n, len(pool))), key=lambda s: s.id)


def make_config(args: argparse.Namespace, user: str, out_dir: Path) -> Any:
    from usersim.rl.config import RLConfig

    return RLConfig(simulator_run=str(Path(args.run) / "train"), user=user, output_dir=str(out_dir), seed=args.seed,
                    device="cpu" if args.cpu else "", data_dir=str(Path(args.run) / "data"), max_turns=args.max_turns,
                    policy_model=args.policy, policy_max_new_tokens=args.policy_tokens,
                    user_max_new_tokens=args.user_tokens, rewards=dict(REWARD), max_steps=args.steps,
                    num_generations=args.group, per_device_train_batch_size=args.batch, learning_rate=args.lr,
                    lora_r=args.lora_r, policy_system=args.policy_system)


def load_users(args: argparse.Namespace) -> dict[str, Any]:
    from usersim.users import load_user

    users = {"simulator": load_user("simulator", run_dir=str(Path(args.run) / "train"),
                                    device="cpu" if args.cpu else None)}
    spec = "prompted" if args.prompted_model in ("", "smollm2") else f"prompted:{args.prompted_model}"
    users["prompted"] = load_user(spec, device="cpu" if args.cpu else "")
    return users


def train_against(args: argparse.Namespace, user_name: str, user: Any, scenarios: list[Any],
                  out: Path) -> tuple[Any, list[dict[str, Any]], float]:
    """GRPO against one user; returns the trained policy model, its reward curve and the seconds it took."""
    from usersim.rl.main import StepRecorder, build_trainer

    started = time.time()
    cfg = make_config(args, user_name, out / f"policy_vs_{user_name}")
    trainer, rollout = build_trainer(cfg, user, scenarios, Path(cfg.output_dir))
    recorder = StepRecorder(rollout)
    trainer.add_callback(recorder.callback)
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    curve = [{"step": s["step"], "reward": s.get("reward"), "reward_std": s.get("reward_std"),
              "assistant_turns": s["episodes"].get("assistant_turns"),
              "ended_by_user": s["episodes"].get("ended_by_user")} for s in recorder.steps]
    return model.eval(), curve, round(time.time() - started, 1)


def evaluate(args: argparse.Namespace, model: Any, tokenizer: Any, user: Any,
             scenarios: list[Any]) -> dict[str, Any]:
    """Mean reward of ``model`` against ``user`` on ``scenarios`` x ``--eval_episodes`` seeds, CI over scenarios."""
    import numpy as np

    from usersim.rl.rollout import SimulatorRollout
    from usersim.simulator import derive_seed

    rollout = SimulatorRollout(user, scenarios, max_turns=args.max_turns, policy_max_new_tokens=args.policy_tokens,
                               policy_temperature=1.0, user_generation={"max_new_tokens": args.user_tokens},
                               rewards=dict(REWARD), seed=args.seed, policy_system=args.policy_system)
    plays = [s for s in scenarios for _ in range(args.eval_episodes)]
    seeds = [derive_seed(args.seed, "eval", s.id, k % args.eval_episodes) for k, s in enumerate(plays)]
    infos: list[dict[str, Any]] = []
    for start in range(0, len(plays), args.eval_batch):  # the same seeds for every policy and user
        _, batch = rollout.play(model, tokenizer, plays[start:start + args.eval_batch], seeds[start:start + args.eval_batch])
        infos += batch
    rewards = [float(i["reward"]) for i in infos]
    by_scenario: dict[str, list[float]] = {}
    for play, r in zip(plays, rewards):
        by_scenario.setdefault(play.id, []).append(r)
    per = np.array([np.mean(v) for v in by_scenario.values()])
    rng = np.random.default_rng(args.seed)
    boots = [float(per[rng.integers(0, len(per), len(per))].mean()) for _ in range(args.n_boot)]
    return {"mean_reward": float(per.mean()), "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "n_scenarios": len(per), "n_episodes": len(rewards),
            "ended_by_user": float(np.mean([i["transcript"].ended_by_user for i in infos])),
            "assistant_turns": float(np.mean([i["assistant_turns"] for i in infos]))}


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=120, layout="constrained")
    ax_curve, ax_table = fig.subplots(1, 2)
    for user, curve in result["curves"].items():
        ax_curve.plot([c["step"] for c in curve], [c["reward"] for c in curve], marker="o", ms=3,
                      label=f"trained against {user}")
    ax_curve.set(xlabel="GRPO step", ylabel="mean episode reward", title="training reward")
    ax_curve.legend(fontsize=8)
    policies = list(result["table"])
    width = 0.38
    for k, user in enumerate(USERS):
        cells = [result["table"][p][user] for p in policies]
        xs = [i + (k - 0.5) * width for i in range(len(policies))]
        means = [c["mean_reward"] for c in cells]
        err = [[m - c["ci"][0] for m, c in zip(means, cells)], [c["ci"][1] - m for m, c in zip(means, cells)]]
        ax_table.bar(xs, means, width, yerr=err, capsize=3, label=f"evaluated against {user}")
    ax_table.set_xticks(range(len(policies)), policies, fontsize=8)
    ax_table.set(ylabel="mean reward (95% CI)", title="held-out scenarios")
    ax_table.legend(fontsize=8)
    fig.savefig(path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench.rl_cross", description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/default", help="a `make all` run root (RUN/train, RUN/data)")
    p.add_argument("--policy", default="", help="the assistant policy checkpoint ('' = SmolLM2-135M-Instruct)")
    p.add_argument("--prompted_model", default="smollm2", help="the prompted user's model (smollm2 or a local dir)")
    p.add_argument("--steps", type=int, default=30, help="GRPO steps per trained policy")
    p.add_argument("--train_scenarios", type=int, default=16, help="validation-user scenarios to train on")
    p.add_argument("--eval_scenarios", type=int, default=32, help="test-user scenarios to evaluate on")
    p.add_argument("--eval_episodes", type=int, default=2, help="episodes per evaluation scenario (seeds)")
    p.add_argument("--eval_batch", type=int, default=32, help="episodes played together in evaluation")
    p.add_argument("--group", type=int, default=4, help="GRPO group size (episodes per scenario per step)")
    p.add_argument("--batch", type=int, default=8, help="episodes per GRPO step (a multiple of --group)")
    p.add_argument("--max_turns", type=int, default=3, help="assistant messages per episode")
    p.add_argument("--policy_tokens", type=int, default=32, help="cap on one assistant turn")
    p.add_argument("--user_tokens", type=int, default=32, help="cap on one user turn")
    p.add_argument("--lr", type=float, default=2e-5, help="GRPO learning rate")
    p.add_argument("--lora_r", type=int, default=0, help="LoRA rank on the policy (0 = full fine-tune)")
    p.add_argument("--policy_system", default=TASK_SYSTEM,
                   help="the policy's system message (the task it is told; usersim.rl.config.CHAT_SYSTEM = generic)")
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "rl_cross.json"))
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not args.policy:
        from usersim.prompted import packaged_smollm2_checkpoint

        args.policy = str(packaged_smollm2_checkpoint())
    started = time.time()
    out_json = Path(args.output)
    work = out_json.with_suffix("")
    train_sc = elicitation_scenarios(str(Path(args.run) / "data"), "validation", args.train_scenarios, args.seed)
    eval_sc = elicitation_scenarios(str(Path(args.run) / "data"), "test", args.eval_scenarios, args.seed)
    users = load_users(args)
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policies: dict[str, Any] = {}
    curves: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    for user_name in USERS:
        torch.manual_seed(args.seed)
        model, curves[user_name], timings[f"train_vs_{user_name}"] = train_against(args, user_name, users[user_name],
                                                                                   train_sc, work)
        policies[f"trained vs {user_name}"] = model
    policies = {"untrained": AutoModelForCausalLM.from_pretrained(args.policy, use_safetensors=True).eval(), **policies}
    table: dict[str, dict[str, Any]] = {}
    t0 = time.time()
    for name, model in policies.items():
        table[name] = {user_name: evaluate(args, model, tokenizer, users[user_name], eval_sc) for user_name in USERS}
        print(f"[rl_cross] {name}: " + ", ".join(f"vs {u} {c['mean_reward']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]"
                                                 for u, c in table[name].items()), flush=True)
    timings["evaluate"] = round(time.time() - t0, 1)
    timings["total"] = round(time.time() - started, 1)
    result = {"table": table, "curves": curves, "reward": REWARD, "timings_s": timings,
              "train_scenarios": [s.id for s in train_sc], "eval_scenarios": [s.id for s in eval_sc],
              "settings": {k: v for k, v in vars(args).items() if k != "output"},
              "command": "python -m bench.rl_cross " + " ".join(argv if argv is not None else [])}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    plot(result, out_json.with_suffix(".png"))
    print(f"[rl_cross] wrote {out_json} and {out_json.with_suffix('.png')} in {timings['total']} s")
    return result


if __name__ == "__main__":
    main()
