"""The compliance suite of eval: every system's replies to the steering probes (usersim.eval.compliance).

``compliance_contexts`` real held-out contexts (one per conversation) each get every probe of
:data:`usersim.eval.compliance.PROBES` as the assistant's last turn; the simulator, the base and the
prompted model each write the user's reply (the simulator with its own decoding and end decision),
cut to the same token budget as every other comparison. Rows written to ``metrics.json``:

- ``compliance_rate`` per system: the share of judgeable replies that go along with the probe, with
  a user-resampling 95% CI (lower is better; no human can be probed after the fact, so no human row);
  per-probe rates are in ``metrics.json["compliance"]``;
- ``direct_question_answer_rate`` for humans and every system, on the main eval items whose last
  partner turn is a direct personal question: how often the reply answers rather than deflects or
  leaves. The nearest human reference the corpus holds (people answer what they are asked most of
  the time); a system far under it is evasive, one far over it is more forthcoming than people.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from usersim.eval.compliance import PROBES, compliance_rates, human_direct_question_rate, probe_items
from usersim.eval.registry import BASE, HUMAN, PROMPTED, SIMULATOR, Metric
from usersim.eval.simulate import SystemTurns

COMPLIANCE_DESCRIPTION = ("share of replies that go along with an assistant turn steering the user against their "
                          "interest or goal (end now, tell everything, accept a bad option, share a password, drop the "
                          "goal, repeat a phrase); word-cue classifier, usersim.eval.compliance")
ANSWER_DESCRIPTION = ("share of replies that answer (not deflect, not leave) when the partner's last turn is a direct "
                      "personal question")
SEED_OFFSET = 17  # the probes' sampling streams are apart from the main items'


def _rate_metric(name: str, system: str, rate: Mapping[str, Any], description: str,
                 higher_is_better: bool | None) -> Metric:
    lo, hi = rate["ci"]
    return Metric(name, system, "failure_mode", rate["rate"], lo, hi, int(rate["n"]), higher_is_better, None, None,
                  description)


def compliance_metric(system: str, overall: Mapping[str, Any]) -> Metric:
    """The ``compliance_rate`` row of one system from ``compliance_rates(...)["overall"]``."""
    return _rate_metric("compliance_rate", system, overall, COMPLIANCE_DESCRIPTION, False)


def answer_rate_metrics(items: Sequence[Mapping[str, Any]], turns: Mapping[str, SystemTurns], systems: Sequence[str],
                        *, n_boot: int, seed: int) -> list[Metric]:
    """``direct_question_answer_rate`` of the humans and of each system on the same items."""
    out = [_rate_metric("direct_question_answer_rate", HUMAN, human_direct_question_rate(items, n_boot=n_boot, seed=seed),
                        ANSWER_DESCRIPTION, None)]
    for system in systems:
        texts = turns[system].compared()
        # the system's reply stands in for the real one; a capped or empty reply cannot be judged
        as_items = [{**it, "target": text, "target_is_end": end}
                    for it, text, end in zip(items, texts, turns[system].ends) if text is not None or end]
        out.append(_rate_metric("direct_question_answer_rate", system,
                                human_direct_question_rate(as_items, n_boot=n_boot, seed=seed), ANSWER_DESCRIPTION,
                                None))
    return out


def compliance_suite(cfg: Any, sim: Any, items: list[dict[str, Any]], turns: Mapping[str, SystemTurns],
                     systems: Sequence[str], *, end_bias: float | None,
                     same_cap: set[str]) -> tuple[list[Metric], dict[str, Any]]:
    """The suite's metric rows and its ``metrics.json["compliance"]`` section ({} when switched off)."""
    metrics = answer_rate_metrics(items, turns, systems, n_boot=cfg.n_boot, seed=cfg.seed)
    if cfg.compliance_contexts <= 0:
        return metrics, {}
    from usersim.eval.simulate import generate_turns

    probed = probe_items(items, PROBES, seed=cfg.seed, max_items=cfg.compliance_contexts)
    if not probed:
        print("[usersim eval] compliance skipped: no held-out context has a user turn yet")
        return metrics, {}
    gen = dict(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, show_progress=cfg.show_progress,
               do_sample=cfg.do_sample, top_p=cfg.top_p, temperature=cfg.temperature)
    seed = cfg.seed + SEED_OFFSET
    replies: dict[str, list[Any]] = {
        SIMULATOR: [r[0] for r in generate_turns(sim, probed, use_adapter=True, seed=seed, end_bias=end_bias, **gen)],
        BASE: [r[0] for r in generate_turns(sim, probed, use_adapter=False, seed=seed, end_bias=None, **gen)]}
    if PROMPTED in systems:
        from usersim.prompted import generate_prompted_turns

        replies[PROMPTED] = generate_prompted_turns(cfg.prompted, probed, seed=seed, device=cfg.device,
                                                    trust_remote_code=cfg.trust_remote_code,
                                                    show_progress=cfg.show_progress)
    section: dict[str, Any] = {"probes": [{"id": p.id, "kind": p.kind, "text": p.text} for p in PROBES],
                               "n_contexts": len(probed) // len(PROBES), "n_items": len(probed), "systems": {}}
    for system, rows in replies.items():
        cut = SystemTurns.from_turns(rows).at_budget(sim.tokenizer, cfg.max_new_tokens,
                                                     capped_at_budget=system in same_cap)
        rates = compliance_rates(probed, cut, n_boot=cfg.n_boot, seed=cfg.seed)
        section["systems"][system] = rates
        metrics.append(compliance_metric(system, rates["overall"]))
    return metrics, section
