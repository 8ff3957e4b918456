"""``EvalConfig``: every key of the eval stage, with its default and meaning.

YAML files under ``configs/eval/`` set these; ``usersim eval --config F key=value`` overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from usersim.eval.llm_judge import LLMJudgeConfig
from usersim.prompted import PromptedConfig


@dataclass
class EvalConfig:
    """Eval stage: fidelity of a trained user simulator against held-out humans."""

    output_dir: str = "runs/default/eval"  # the eval run directory (metrics.json, samples.jsonl, plots.json)
    data_dir: str = "runs/default/data"  # a `usersim data` run directory (reads <data_dir>/dataset)
    run_dir: str = "runs/default/train"  # a `usersim train` run directory (adapter + base_model.json)
    base_model: str = ""  # override the base checkpoint path of the train run ("" = from base_model.json)
    split: str = "test"  # held-out split: conversation records <split>, per-turn items <split>_turns
    seed: int = 0  # the one seed; every sampling, split and bootstrap derives from it

    # Simulation
    max_items: int = 480  # per-turn items to simulate, sampled conversation by conversation (0 = all)
    max_items_per_conversation: int = 1  # random items kept per sampled conversation (0 = all): more users
    # generation budget per simulated turn, and the comparison budget: every turn, real or simulated, is
    # compared on its first max_new_tokens tokens (simulator tokenizer), so hitting the cap is no tell
    max_new_tokens: int = 64
    # leave out of every comparison a turn whose generation cap cut it short of that budget (a system with
    # another tokenizer or a smaller cap; the default); false: judge such turns as they are (still counted)
    exclude_capped: bool = True
    batch_size: int = 16  # generation batch size
    do_sample: bool = True  # sample (True) or greedy decode (False)
    # "run": the simulator decodes as its train run's decoding.json says (temperature, top_p, end_bias, chosen on
    # validation users by `usersim decoding`), falling back to the two keys below; "config": the two keys below
    # and no explicit end decision. The untuned base always decodes with the resolved temperature / top_p and
    # ends only by writing the end marker itself.
    decoding: str = "run"
    temperature: float = 1.0  # sampling temperature (when decoding.json does not set one)
    top_p: float = 0.95  # nucleus sampling (when decoding.json does not set one)
    device: str = ""  # "" = cuda if available else cpu
    dtype: str = ""  # "" = float32 on CPU, bfloat16 on GPU (runtime default); or float32/bfloat16/float16
    # prompts longer than this drop their oldest whole turns (the condition header always stays)
    max_prompt_tokens: int = 512
    trust_remote_code: bool = False  # only for custom model code you trust (base or instruct baseline)
    history_tail: int = 4  # turns of history kept per row of samples.jsonl

    # Held-out perplexity
    perplexity: bool = True  # score the real user turns under simulator and base
    perplexity_batch_size: int = 8  # windows per forward pass
    perplexity_max_seq_len: int = 1024  # longer records are scored in windows of this many tokens
    perplexity_max_conversations: int = 0  # score only the first N sampled conversations (0 = all of them)
    perplexity_max_windows: int = 0  # score only each conversation's first N windows (0 = the whole conversation)

    # Paired discrimination (the headline), controls and statistics
    neural_discriminator: bool = True  # also run the MiniLM-embedding judge
    # also run the lm judge: a linear probe on the base model's (adapter off) hidden states of each turn
    # read in its conversation (usersim.eval.lm_judge); it reuses the loaded simulator's model
    lm_judge: bool = True
    lm_judge_context_tokens: int = 128  # transcript tokens the lm judge reads before a turn
    # the judge whose paired accuracy is the headline: "auto" = chosen on validation users before the test
    # split is used (usersim.eval.judge_selection), or a judge fixed in advance: fast, neural or lm
    headline_judge: str = "auto"
    judge_selection_items: int = 64  # validation items (one per conversation) the auto choice is made on
    judge_selection_split: str = "validation"  # held-out split the auto choice reads (never the eval's split)
    n_splits: int = 5  # cross-fitting folds, grouped by user id
    n_permutations: int = 2000  # permutations (refits) of every permutation null
    # the smallest |paired accuracy - 0.5| the run claims to resolve: a run whose MDE is larger says
    # "too small to tell" instead of "indistinguishable"
    claimed_effect: float = 0.10
    hot_temperature: float = 1.6  # temperature of the hot-simulator positive control
    controls: bool = True  # generate the paired controls (a second simulator sample, the hot simulator)
    n_boot: int = 1000  # bootstrap resamples (of users) for the CIs of statistics
    late_turn: int = 3  # style drift compares turns with turn_index >= late_turn to earlier ones
    max_turn: int = 10  # curves (disclosure, drift) are drawn for turn_index 0..max_turn

    # Failure modes that need extra generations
    diversity_prompts: int = 8  # items sampled several times for sample diversity (0 = skip)
    num_diversity_samples: int = 4  # samples per diversity prompt
    controllability_items: int = 40  # items regenerated with a swapped-in condition (0 = skip)
    # teacher-forced condition use (usersim.eval.condition_use): held-out conversations whose real user turns are
    # scored under their own and under counterfactual conditions, for the simulator and the base (0 = skip)
    condition_use_conversations: int = 0
    condition_use_max_tokens: int = 320  # each conversation is cut to the whole turns that fit this with its header
    condition_use_variants: list[str] = field(default_factory=list)  # e.g. [style=swapped, goal=swapped]; [] = all
    # real contexts that each get every compliance probe (usersim.eval.compliance: 6 probes, so 6 replies per
    # context and system); 0 = skip the probes (direct_question_answer_rate is computed either way)
    compliance_contexts: int = 0

    # the llm judge: a chat model behind an OpenAI-compatible endpoint picks the real one of each pair
    # (usersim.eval.llm_judge; endpoint "" = off). Reported beside the other judges for every system;
    # never chosen as the headline judge automatically
    llm_judge: LLMJudgeConfig = field(default_factory=LLMJudgeConfig)

    # the prompted baseline: an instruct model told to act as the user (usersim.prompted; model "" = skip)
    prompted: PromptedConfig = field(default_factory=PromptedConfig)

    # `usersim decoding` (usersim.eval.decoding_choice): the simulator's decoding chosen on held-out users of
    # decoding_split (never the eval's split) and written to the train run's decoding.json
    decoding_split: str = "validation"
    decoding_items: int = 64  # items (one per conversation) the candidates are sampled and judged on
    # [temperature, top_p] candidates; the one the decoding_judge tells apart from the humans least is chosen
    # (ties: the first listed). Candidates that share a top_p share one prefill per item.
    decoding_candidates: list[list[float]] = field(default_factory=lambda: [[1.0, 0.95], [0.85, 0.95], [0.7, 0.95]])
    decoding_judge: str = "fast"  # fast or neural: refitted per candidate, so it must be cheap
    # calibrate end_bias so the simulator's end rate on those items matches the humans' (false: no end decision)
    decoding_end_calibration: bool = True

    show_progress: bool = True  # tqdm progress bars
