"""``usersim rl``: GRPO on an assistant policy against a trained user simulator.

Reads straight through: load the simulator, the scenarios and the policy; build the GRPO dataset
(one row per scenario, the prompt is the scenario id); train with :class:`SimulatorRollout` as
TRL's ``rollout_func`` and the simulator rewards as ``reward_funcs``; write ``metrics.json`` (one
entry per step with its mean reward), ``samples.jsonl`` (the last step's transcripts) and the
policy (``policy/``, safetensors).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from usersim.data_prep.run_info import write_run_dir_header
from usersim.data_prep.stage_config import run_stage_cli
from usersim.rl.config import RLConfig
from usersim.rl.rewards import RewardFn, resolve_rewards
from usersim.rl.rollout import SimulatorRollout, trl_reward_functions
from usersim.rl.scenarios import Scenario, load_scenarios_file, scenarios_from_dataset


def import_trl() -> Any:
    try:
        import trl
    except ImportError:
        raise ImportError("usersim rl needs TRL: pip install trl (it is in the dev and bench extras)") from None
    return trl


def load_scenarios(cfg: RLConfig) -> list[Scenario]:
    if cfg.opener not in ("user", "assistant", "record"):
        raise ValueError(f"opener must be user, assistant or record, got {cfg.opener!r}")
    if cfg.scenarios_file:
        if cfg.opener == "record":
            raise ValueError("opener=record needs data records; hand-written scenarios take user or assistant "
                             "(or an 'opener' key per scenario)")
        scenarios = load_scenarios_file(cfg.scenarios_file, opener=cfg.opener)
        return scenarios[: cfg.max_scenarios] if cfg.max_scenarios else scenarios
    return scenarios_from_dataset(cfg.data_dir, cfg.split, cfg.max_scenarios or None, cfg.seed, cfg.opener)


def policy_path(cfg: RLConfig) -> str:
    """The policy checkpoint: ``policy_model``, or the simulator's base checkpoint for "simulator_base"."""
    if cfg.policy_model != "simulator_base":
        return cfg.policy_model
    from usersim.run_files import resolve_base_path

    return resolve_base_path(Path(cfg.simulator_run), None)


def check_config(cfg: RLConfig) -> None:
    if cfg.num_generations < 2:
        raise ValueError("num_generations must be >= 2: GRPO compares episodes within a group")
    if cfg.per_device_train_batch_size % cfg.num_generations:
        raise ValueError(f"per_device_train_batch_size ({cfg.per_device_train_batch_size}) must be a multiple of "
                         f"num_generations ({cfg.num_generations})")
    if cfg.policy_temperature <= 0:
        raise ValueError("policy_temperature must be > 0: GRPO needs sampled episodes")
    from usersim.users import parse_user_spec

    kind, _ = parse_user_spec(cfg.user)
    run = cfg.simulator_run
    if kind in ("simulator", "base", "completions") and not Path(run).is_dir() and (run.count("/") != 1 or run.startswith((".", "/", "~", "runs/"))):
        raise FileNotFoundError(f"simulator run {cfg.simulator_run!r} not found: train one first "
                                "(make train, or make all PROFILE=smoke)")


def build_trainer(cfg: RLConfig, simulator: Any, scenarios: list[Scenario], out_dir: Path,
                  rewards: dict[str, tuple[RewardFn, float]] | None = None) -> tuple[Any, SimulatorRollout]:
    """The GRPOTrainer and its rollout function, ready to ``train()``.

    ``rewards``: ``{name: (function, weight)}`` to use instead of ``cfg.rewards`` (your own pure
    reward functions of (transcript, scenario)).
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trl = import_trl()
    rewards = rewards or resolve_rewards(cfg.rewards)
    rollout = SimulatorRollout(
        simulator, scenarios, max_turns=cfg.max_turns, policy_max_new_tokens=cfg.policy_max_new_tokens,
        policy_temperature=cfg.policy_temperature, policy_top_p=cfg.policy_top_p, rewards=rewards,
        user_generation={"max_new_tokens": cfg.user_max_new_tokens,
                         **{k: v for k, v in (("temperature", cfg.user_temperature), ("top_p", cfg.user_top_p))
                            if v is not None}}, seed=cfg.seed, policy_format=cfg.policy_format,
        policy_system=cfg.policy_system)
    path = policy_path(cfg)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    policy = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=dtype,
                                                  trust_remote_code=cfg.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    peft_config = None
    if cfg.lora_r > 0:
        from peft import LoraConfig

        targets = cfg.lora_target_modules or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"]
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets,
                                 task_type="CAUSAL_LM")
    use_cpu = (cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cpu"
    args = trl.GRPOConfig(
        output_dir=str(out_dir / "policy"), max_steps=cfg.max_steps, seed=cfg.seed,
        per_device_train_batch_size=cfg.per_device_train_batch_size, num_generations=cfg.num_generations,
        gradient_accumulation_steps=1, learning_rate=cfg.learning_rate, beta=cfg.beta,
        max_grad_norm=cfg.max_grad_norm, temperature=cfg.policy_temperature, top_p=cfg.policy_top_p,
        max_completion_length=cfg.max_turns * (cfg.policy_max_new_tokens + cfg.user_max_new_tokens + 16),
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=use_cpu, bf16=cfg.dtype == "bfloat16",
        disable_dropout=True, dataloader_num_workers=0, disable_tqdm=True,
    )
    funcs, weights = trl_reward_functions(rewards)
    args.reward_weights = weights
    dataset = Dataset.from_dict({"prompt": rollout.prompts()})
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=funcs, args=args, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft_config, rollout_func=rollout)
    return trainer, rollout


class StepRecorder:
    """A TrainerCallback that keeps one entry per optimizer step: TRL's logged metrics + the rollout's stats."""

    KEEP = ("loss", "reward", "reward_std", "grad_norm", "learning_rate", "completions/mean_length", "kl", "entropy")

    def __init__(self, rollout: SimulatorRollout):
        from transformers import TrainerCallback

        recorder = self

        class _Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401 - transformers hook
                if logs and "reward" in logs:
                    recorder.add(state.global_step, logs)

        self.callback = _Callback()
        self.rollout = rollout
        self.steps: list[dict[str, Any]] = []

    def add(self, step: int, logs: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"step": int(step)}
        for key, value in logs.items():
            if key in self.KEEP or key.startswith("rewards/"):
                entry[key] = _finite(value)
        entry["episodes"] = {k: _finite(v) for k, v in self.rollout.last_stats.items()}
        self.steps.append(entry)
        print(f"[usersim rl] step {step}: reward {entry['reward']:.4f} "
              f"(ended by user {entry['episodes'].get('ended_by_user', float('nan')):.2f}, "
              f"turns {entry['episodes'].get('assistant_turns', float('nan')):.2f})", flush=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(cfg: RLConfig) -> Path:
    import torch
    from transformers import set_seed

    from usersim.users import load_user

    set_seed(cfg.seed)
    check_config(cfg)
    out_dir = Path(cfg.output_dir)
    write_run_dir_header(out_dir, cfg, cfg.seed, "rl")
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.time()
    simulator = load_user(cfg.user, run_dir=cfg.simulator_run, model=cfg.user_model, api_key_env=cfg.user_api_key_env,
                          device=device)
    scenarios = load_scenarios(cfg)
    trainer, rollout = build_trainer(cfg, simulator, scenarios, out_dir)
    recorder = StepRecorder(rollout)
    trainer.add_callback(recorder.callback)
    trainer.train()
    trainer.save_model(str(out_dir / "policy"))
    (out_dir / "policy" / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml says it all
    metrics = {
        "steps": recorder.steps,
        "simulator_run": cfg.simulator_run,
        "user": cfg.user,
        "policy_model": policy_path(cfg),
        "scenarios": len(scenarios),
        "rewards": dict(cfg.rewards),
        "episodes_per_step": cfg.per_device_train_batch_size,
        "wall_seconds": round(time.time() - started, 1),
        "note": "mean reward per GRPO step; a few steps of a small policy show the plumbing, not learning",
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    with open(out_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        for row in rollout.last_transcripts[: cfg.num_samples_to_save]:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out_dir


def cli(argv: list[str] | None = None) -> int:
    import sys

    return run_stage_cli(list(sys.argv[1:] if argv is None else argv), RLConfig, main, prog="usersim rl",
                         default_config="configs/rl/default.yaml")
