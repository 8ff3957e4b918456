"""``RLConfig``: every key of the rl stage (GRPO on a policy against a trained simulator).

YAML files under ``configs/rl/`` set these; ``usersim rl --config F key=value`` overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHAT_SYSTEM = "You are a helpful assistant."  # the chat view's system message unless policy_system says otherwise


@dataclass
class RLConfig:
    """Train an assistant policy with GRPO against a trained user simulator (multi-turn episodes)."""

    simulator_run: str = "runs/default/train"  # the simulator: a `usersim train` run dir (or a published adapter repo id)
    # who plays the user (usersim.users): simulator (simulator_run), base (its adapter off), prompted
    # (SmolLM2-135M-Instruct told to play the user), prompted-endpoint:URL, completions:URL (simulator_run served)
    user: str = "simulator"
    user_model: str = ""  # the served model's name (prompted-endpoint, completions)
    user_api_key_env: str = ""  # NAME of the env var holding that endpoint's key (never the key)
    output_dir: str = "runs/default/rl"  # the run directory this stage writes
    seed: int = 0  # the one seed: scenario subset, episodes, policy sampling and TRL's own seed derive from it
    device: str = ""  # "" = cuda when available, else cpu; the policy and the simulator share it

    # --- scenarios (who the simulated users are) ---
    data_dir: str = "runs/default/data"  # a data run dir: scenarios are the conditions of its held-out records
    split: str = "test"  # which split of DATA_DIR/dataset supplies the scenarios (held-out users)
    scenarios_file: str = ""  # a .jsonl/.yaml list of hand-written scenarios; when set, data_dir is not read
    max_scenarios: int = 32  # a seeded random subset of this many scenarios (0 = all)
    opener: str = "user"  # who speaks first: user | assistant | record (each record's own first speaker)

    # --- episodes ---
    max_turns: int = 4  # assistant messages per episode; after the last one the user may still end it
    policy_max_new_tokens: int = 48  # cap on one assistant turn (a cut turn is closed by the environment)
    policy_temperature: float = 1.0  # the policy's sampling temperature (also GRPOConfig.temperature)
    policy_top_p: float = 1.0  # the policy's nucleus; 1.0 = full distribution (what GRPO's scoring assumes)
    user_max_new_tokens: int = 48  # cap on one simulated user turn
    # the simulator's sampling temperature / nucleus; null = the simulator run's decoding.json (chosen on
    # validation users by `usersim decoding`), else 1.0 / 0.95
    user_temperature: float | None = None  # the simulator's sampling temperature (null: the run's decoding.json)
    user_top_p: float | None = None  # the simulator's nucleus (null: the run's decoding.json)
    # Reward names and weights, summed (usersim.rl.rewards.REWARDS: user_ended, asks_answered,
    # discloses_elicited, goal_progress, elicited_after_asking).
    rewards: dict[str, float] = field(default_factory=lambda: {"user_ended": 1.0, "goal_progress": 1.0})

    # --- policy ---
    # The assistant being trained: an HF id or local checkpoint dir, or "simulator_base" = the
    # simulator's own base checkpoint (a base LM playing the assistant through the plain transcript format).
    policy_model: str = "simulator_base"
    # how the policy sees the conversation: auto = its chat template when its tokenizer has one, else the plain
    # transcript (User: / Assistant: markers); chat | plain force one (usersim.rl.rollout.policy_format)
    policy_format: str = "auto"
    # the system message of the chat view: the task the policy is told (e.g. to find out about the user); "" = none
    policy_system: str = CHAT_SYSTEM
    trust_remote_code: bool = False  # let transformers run model code shipped with the policy checkpoint
    dtype: str = "float32"  # float32 | bfloat16 | float16 for the policy's weights
    lora_r: int = 16  # LoRA rank on the policy (0 = train every weight)
    lora_alpha: int = 32  # LoRA scaling numerator
    # LoRA target modules; [] = q/k/v/o + gate/up/down projections
    lora_target_modules: list[str] = field(default_factory=list)

    # --- GRPO (TRL GRPOConfig) ---
    max_steps: int = 20  # optimizer steps
    num_generations: int = 4  # episodes per scenario in a group (GRPO's G; >= 2)
    per_device_train_batch_size: int = 8  # episodes per step and device; a multiple of num_generations
    learning_rate: float = 1e-5  # peak learning rate
    beta: float = 0.0  # KL penalty to the initial policy (0 = none, no reference model kept)
    max_grad_norm: float = 1.0  # gradient clipping
    num_samples_to_save: int = 8  # transcripts of the last step written to samples.jsonl
