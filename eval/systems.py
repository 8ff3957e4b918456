"""The systems of eval and their turns: every system writes the next user turn of every item, once.

The trained simulator (three samples per prompt when the controls are on: the simulator, a second
sample, a hot sample), the untuned base (same prompt, adapter off) and the prompted instruct model
(usersim.prompted); plus the rows held-out perplexity is read from. Model-bound: everything else in
eval is a function of these turns.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence


from usersim.eval.config import EvalConfig
from usersim.eval.decoding_choice import sim_end_bias
from usersim.eval.registry import BASE, HUMAN, PROMPTED, SIMULATOR
from usersim.eval.simulate import SystemTurns

RESAMPLE, HOT = "simulator_resample", "simulator_hot"  # the controls' extra simulator samples
SAME_CAP = {SIMULATOR, RESAMPLE, HOT, BASE}  # generated with the simulator's tokenizer and cap max_new_tokens


def generate_all(cfg: EvalConfig, sim: Any, items: list[dict[str, Any]],
                 prompt_ids: Sequence[Sequence[int]] | None = None) -> dict[str, SystemTurns]:
    """Every system's turns (and the controls' extra simulator samples), generated once.

    ``prompt_ids``: each item's simulator prompt, when the caller built them already (they are the same
    for the simulator and the base, so they are tokenised once either way)."""
    from usersim.eval.simulate import generate_turns, item_condition

    if prompt_ids is None:
        prompt_ids = [sim.prompt_ids(it["history"], item_condition(it)) for it in items]
    gen = dict(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, show_progress=cfg.show_progress,
               do_sample=cfg.do_sample, top_p=cfg.top_p, prompt_ids=prompt_ids)
    out = {HUMAN: SystemTurns.human(items)}
    end_bias = sim_end_bias(cfg, sim)
    # the simulator and the controls' two extra samples share each prompt: one prefill, three samples
    family = [(SIMULATOR, cfg.temperature)] + ([(RESAMPLE, cfg.temperature), (HOT, cfg.hot_temperature)]
                                                if cfg.controls else [])
    rows = generate_turns(sim, items, use_adapter=True, seed=cfg.seed, num_samples=len(family),
                          temperatures=[t for _, t in family], end_bias=end_bias, **gen)
    for k, (system, _) in enumerate(family):
        out[system] = SystemTurns.from_turns([row[k] for row in rows])
    out[BASE] = SystemTurns.from_turns([row[0] for row in generate_turns(sim, items, use_adapter=False, seed=cfg.seed,
                                                                          temperature=cfg.temperature, end_bias=None,
                                                                          **gen)])
    if cfg.prompted.model or cfg.prompted.endpoint:
        from usersim.prompted import generate_prompted_turns

        out[PROMPTED] = SystemTurns.from_turns(generate_prompted_turns(
            cfg.prompted, items, seed=cfg.seed, device=cfg.device, trust_remote_code=cfg.trust_remote_code,
            show_progress=cfg.show_progress))
    return out


def perplexity_records(cfg: EvalConfig, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return records[:cfg.perplexity_max_conversations] if cfg.perplexity_max_conversations > 0 else records


def perplexity_rows(cfg: EvalConfig, sim: Any, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per system (simulator, base), usersim.eval.perplexity's row of every conversation in ``records``."""
    from usersim.eval.perplexity import user_turn_nll

    with warnings.catch_warnings():  # the count of unscored tokens is reported once, as a plain line
        warnings.filterwarnings("ignore", message=r".*user-turn tokens did not fit max_seq_len")
        return {system: user_turn_nll(sim, records, use_adapter=use_adapter, batch_size=cfg.perplexity_batch_size,
                                      max_seq_len=cfg.perplexity_max_seq_len, max_windows=cfg.perplexity_max_windows,
                                      show_progress=cfg.show_progress)
                for system, use_adapter in ((SIMULATOR, True), (BASE, False))}
