"""Multi-turn rollouts between a policy LM (the assistant) and the simulated user, for TRL's GRPOTrainer.

``SimulatorRollout`` is a ``rollout_func`` (``GRPOTrainer(..., rollout_func=rollout)``): TRL hands it
the prompts of a generation batch (already repeated ``num_generations`` times) and the trainer; each
prompt is a scenario id. For every prompt it plays one episode of :class:`BatchUserSimEnv`, all
episodes stepped together: the policy writes an assistant turn for every live episode (one batched
``generate``), the simulator answers all of them in one ``respond_batch`` call, and so on until each
user ends or ``max_turns`` is reached.

What TRL gets back, per episode, in the *policy's* token space:

- ``prompt_ids``: the policy's view before its first turn (transcript header, the user's opening
  message if the user opened, the assistant marker);
- ``completion_ids``: everything after that, in order: the policy's turns *as sampled* (token for
  token, never re-tokenised) interleaved with the simulator's turns rendered for the policy;
- ``env_mask``: 1 on tokens the policy sampled, 0 on tokens the environment wrote (user turns, turn
  markers, and the EOS closing a policy turn that hit ``max_new_tokens``). TRL multiplies its loss
  mask by it, so the loss is on the policy's tokens only;
- ``logprobs``: ``None`` (TRL recomputes log-probabilities itself when it does not generate with vLLM);
- ``transcript`` and ``scenario``: one per episode, forwarded by TRL to the reward functions
  (see :func:`trl_reward_functions`).

An instruct policy sees the conversation through its own chat template (:class:`ChatTemplateFormat`:
a system message, then the user's and its own messages); a policy without one sees a plain-text
transcript (:class:`PlainTranscriptFormat`: ``User: ``/``Assistant: `` markers, each turn closed by
EOS), which any causal LM can continue (``policy_format``: auto, chat or plain). Either way the
policy's sampled tokens go to TRL unchanged, never re-tokenised. The policy never sees the user's
condition (persona, goal, knowledge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from usersim.data_prep.prompt_format import ASSISTANT_MARKER, USER_MARKER
from usersim.rl.config import CHAT_SYSTEM
from usersim.rl.env import BatchUserSimEnv
from usersim.rl.rewards import RewardFn
from usersim.rl.scenarios import Scenario
from usersim.engine import RowwiseSampler, left_pad
from usersim.simulator import clean_generated_text, derive_seed

POLICY_HEADER = "[Assistant]\nA conversation between a user and a helpful assistant.\n[Conversation]"


class PlainTranscriptFormat:
    """The policy's view of the conversation as text; every piece is tokenised on its own.

    ::

        <bos>[Assistant]
        A conversation between a user and a helpful assistant.
        [Conversation]
        User: hi, any good hike nearby?<eos>
        Assistant: ⟦Try the river trail.<eos>⟧
        User: thanks!<eos>
        Assistant: ⟦...⟧

    (⟦…⟧: tokens the policy sampled, the only ones with loss.)
    """

    def __init__(self, tokenizer: Any, header: str = POLICY_HEADER):
        if tokenizer.eos_token_id is None:
            raise ValueError("the policy tokenizer has no EOS token; the transcript format closes every turn with EOS")
        self.tokenizer = tokenizer
        self.header = header

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, opening_user_message: str | None) -> list[int]:
        """Header (+ the user's opening turn) + the assistant marker: the policy's first context."""
        bos = getattr(self.tokenizer, "bos_token_id", None)
        ids = [bos] if bos is not None else []
        ids += self._ids(self.header)
        if opening_user_message is not None:
            ids += self._ids(USER_MARKER) + self._ids(opening_user_message) + [self.tokenizer.eos_token_id]
        return ids + self._ids(ASSISTANT_MARKER)

    def user_turn_ids(self, text: str) -> list[int]:
        """A user turn and the next assistant marker, as the environment writes them into the policy's context."""
        return self._ids(USER_MARKER) + self._ids(text) + [self.tokenizer.eos_token_id] + self._ids(ASSISTANT_MARKER)

    def message_text(self, turn_ids: Sequence[int]) -> str:
        """The assistant message of sampled tokens: decoded, cut where it runs on into another turn."""
        return clean_generated_text(self.tokenizer.decode(list(turn_ids), skip_special_tokens=True))


ASSISTANT_OPENS_CUE = "(The user is waiting for you to start the conversation.)"
_PROBE = ("usersim-probe-user", "usersim-probe-assistant")  # placeholder turns to find the template's pieces


class ChatTemplateFormat:
    """The policy's view through its own chat template (instruct policies): system, user and assistant messages.

    The prompt is the template's rendering with the generation prompt. After a policy turn (which ends at
    the template's end-of-turn token, the tokenizer's EOS), the environment writes the rest of what the
    template puts between that token and the next assistant message: the template's text after the
    assistant's end-of-turn token, the user message, the next generation prompt. Found once by rendering
    placeholder turns, so any template whose rendering of a longer conversation extends that of a shorter
    one (ChatML, Llama 3, Gemma, SmolLM2, ...) works; others are refused with a clear error.
    """

    def __init__(self, tokenizer: Any, system: str = CHAT_SYSTEM):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the policy tokenizer has no chat template: use the plain transcript format")
        if tokenizer.eos_token_id is None:
            raise ValueError("the policy tokenizer has no EOS token (the end of an assistant turn)")
        self.tokenizer = tokenizer
        self.system = system
        self.eos_text = tokenizer.decode([tokenizer.eos_token_id])
        user, assistant = _PROBE
        first = self._render([{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], False)
        longer = self._render([{"role": "user", "content": user}, {"role": "assistant", "content": assistant},
                               {"role": "user", "content": user}], True)
        end = first.rfind(self.eos_text)
        if not longer.startswith(first) or end < first.rfind(assistant):
            raise ValueError("the policy's chat template does not extend a conversation by appending to it (or its "
                             "assistant turns do not end with the EOS token); use the plain transcript format")
        between = longer[len(first):]
        self._after_eos = first[end + len(self.eos_text):]
        cut = between.index(user)
        self._before_user, self._after_user = between[:cut], between[cut + len(user):]

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        msgs = ([{"role": "system", "content": self.system}] if self.system else []) + messages
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, opening_user_message: str | None) -> list[int]:
        opening = opening_user_message if opening_user_message is not None else ASSISTANT_OPENS_CUE
        return self._ids(self._render([{"role": "user", "content": opening}], True))

    def user_turn_ids(self, text: str) -> list[int]:
        """After the policy's end-of-turn token: the template's pieces around the user message."""
        return self._ids(self._after_eos + self._before_user + text + self._after_user)

    def message_text(self, turn_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(turn_ids), skip_special_tokens=True).strip()


def policy_format(tokenizer: Any, kind: str = "auto", system: str = CHAT_SYSTEM) -> Any:
    """The policy's view: ``plain`` (PlainTranscriptFormat), ``chat`` (ChatTemplateFormat, with ``system`` as its
    system message; "" = none) or ``auto`` (chat when the tokenizer has a chat template)."""
    if kind not in ("auto", "plain", "chat"):
        raise ValueError(f"policy_format must be auto, plain or chat, got {kind!r}")
    if kind == "chat" or (kind == "auto" and getattr(tokenizer, "chat_template", None)):
        return ChatTemplateFormat(tokenizer, system)
    return PlainTranscriptFormat(tokenizer)


@torch.no_grad()
def sample_policy_turns(model: Any, tokenizer: Any, contexts: Sequence[Sequence[int]], seeds: Sequence[int],
                        max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                        top_k: int = 0) -> list[list[int]]:
    """One assistant turn per context: sampled token ids up to and including EOS (or ``max_new_tokens``).

    Each row samples with its own random stream (``RowwiseSampler``), so a row's turn depends on its
    seed and its context only; ``temperature=0`` decodes greedily.
    """
    from transformers import GenerationConfig, LogitsProcessorList

    if not contexts:
        return []
    processors = LogitsProcessorList()
    if temperature > 0:
        processors.append(RowwiseSampler(seeds, temperature=temperature, top_p=top_p, top_k=top_k))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=int(max_new_tokens), do_sample=False, use_cache=True, temperature=1.0,
                              top_k=50, top_p=1.0, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad,
                              bos_token_id=getattr(tokenizer, "bos_token_id", None))
    ids, mask = left_pad(contexts, pad)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                             logits_processor=processors)
    finally:
        model.train(was_training)
    turns = []
    eos = tokenizer.eos_token_id
    for row in out[:, ids.shape[1]:].tolist():
        turns.append(row[: row.index(eos) + 1] if eos in row else row)
    return turns


@dataclass
class EpisodeTokens:
    """One episode in the policy's token space (what GRPOTrainer trains on)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]


class SimulatorRollout:
    """``rollout_func`` for TRL's GRPOTrainer: multi-turn episodes against the simulated user.

    ``simulator``: a ``UserSimulator``; ``scenarios``: the scenarios the GRPO dataset's prompts
    name (``prompt`` = scenario id, see :meth:`prompts`); ``max_turns``: assistant messages per
    episode; ``policy_format``: the policy's view (:func:`policy_format`: ``auto`` = its chat template
    when it has one, else the plain transcript); ``policy_system``: the system message of the chat view (the
    task the policy is told; unused by the plain view); ``policy_max_new_tokens`` / ``policy_temperature`` / ``policy_top_p``: the policy's
    sampling (keep the temperature equal to GRPOConfig's ``temperature``, which TRL uses to score
    the tokens); ``user_generation``: the simulator's sampling; ``rewards``: names with weights or
    ``{name: (function, weight)}`` (see :class:`BatchUserSimEnv`); ``seed``: rollouts are seeded from
    (seed, call number, row), so a rerun replays the same episodes for the same policy weights.
    """

    def __init__(self, simulator: Any, scenarios: Sequence[Scenario], *, max_turns: int = 4,
                 policy_max_new_tokens: int = 48, policy_temperature: float = 1.0, policy_top_p: float = 1.0,
                 user_generation: Mapping[str, Any] | None = None,
                 rewards: Mapping[str, float] | Mapping[str, tuple[RewardFn, float]] | None = None,
                 seed: int = 0, policy_format: str = "auto", policy_system: str = CHAT_SYSTEM):
        self.scenarios = {s.id: s for s in scenarios}
        if len(self.scenarios) != len(scenarios):
            raise ValueError("scenario ids must be unique: they are the GRPO prompts")
        self.env = BatchUserSimEnv(simulator, list(scenarios), max_turns=max_turns, rewards=rewards,
                                   generation=user_generation)
        self.policy_max_new_tokens = int(policy_max_new_tokens)
        self.policy_temperature = float(policy_temperature)
        self.policy_top_p = float(policy_top_p)
        self.seed = int(seed)
        self.policy_format = policy_format
        self.policy_system = policy_system
        self.calls = 0
        self.last_stats: dict[str, float] = {}
        self.last_transcripts: list[dict[str, Any]] = []

    def prompts(self) -> list[str]:
        """The GRPO dataset's ``prompt`` column: one scenario id per row."""
        return list(self.scenarios)

    # -- the TRL entry point -----------------------------------------------------------------------
    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        scenarios = [self._scenario(p) for p in prompts]
        seeds = [derive_seed(self.seed, "rollout", self.calls, i) for i in range(len(prompts))]
        self.calls += 1
        episodes, infos = self.play(model, tokenizer, scenarios, seeds)
        return {"prompt_ids": [e.prompt_ids for e in episodes], "completion_ids": [e.completion_ids for e in episodes],
                "env_mask": [e.env_mask for e in episodes], "logprobs": None,
                "transcript": [info["transcript"] for info in infos], "scenario": [info["scenario"] for info in infos]}

    def _scenario(self, prompt: Any) -> Scenario:
        key = prompt if isinstance(prompt, str) else None
        if key not in self.scenarios:
            raise KeyError(f"GRPO prompt {prompt!r} is not a scenario id of this rollout; build the dataset "
                           "from SimulatorRollout.prompts()")
        return self.scenarios[key]

    # -- one batch of episodes -------------------------------------------------------------------
    def play(self, model: Any, tokenizer: Any, scenarios: Sequence[Scenario],
             seeds: Sequence[int]) -> tuple[list[EpisodeTokens], list[dict[str, Any]]]:
        """Play one episode per (scenario, seed); returns their token sequences and the final env infos."""
        fmt = policy_format(tokenizer, self.policy_format, self.policy_system)
        observations, infos = self.env.reset(seeds=seeds, scenarios=scenarios)
        episodes = [EpisodeTokens(prompt_ids=fmt.prompt_ids(obs if info["opener"] == "user" else None),
                                  completion_ids=[], env_mask=[]) for obs, info in zip(observations, infos)]
        eos = tokenizer.eos_token_id
        turn = 0
        while any(self.env.live):
            live = [i for i, alive in enumerate(self.env.live) if alive]
            contexts = [episodes[i].prompt_ids + episodes[i].completion_ids for i in live]
            turn_seeds = [derive_seed(seeds[i], "policy", turn) for i in live]
            sampled = sample_policy_turns(model, tokenizer, contexts, turn_seeds, self.policy_max_new_tokens,
                                          self.policy_temperature, self.policy_top_p)
            messages: list[str | None] = [None] * len(episodes)
            for i, ids in zip(live, sampled):
                episodes[i].completion_ids += ids
                episodes[i].env_mask += [1] * len(ids)
                messages[i] = fmt.message_text(ids)
            observations, _, terminated, truncated, infos = self.env.step(messages)
            for i, ids in zip(live, sampled):
                if terminated[i] or truncated[i]:
                    continue  # the episode ends on the policy's own last token (TRL sees a cut turn as cut)
                closing = [] if ids and ids[-1] == eos else [eos]  # a turn cut by max_new_tokens is closed for it
                env_ids = closing + fmt.user_turn_ids(observations[i])
                episodes[i].completion_ids += env_ids
                episodes[i].env_mask += [0] * len(env_ids)
            turn += 1
        self._record(infos)
        return episodes, infos

    def _record(self, infos: Sequence[dict[str, Any]]) -> None:
        n = max(len(infos), 1)
        self.last_stats = {
            "episodes": float(len(infos)),
            "ended_by_user": sum(i["transcript"].ended_by_user for i in infos) / n,
            "hit_turn_limit": sum(i["transcript"].hit_turn_limit for i in infos) / n,
            "assistant_turns": sum(i["assistant_turns"] for i in infos) / n,
            "user_turns_cut": sum(i["transcript"].user_turns_cut for i in infos) / n,
            "opener_fallbacks": float(sum(i["opener"] != i["scenario"].opener for i in infos)),
        }
        for name in self.env.rewards:
            values = [i["rewards"].get(name) for i in infos if i["rewards"].get(name) is not None]
            self.last_stats[f"reward/{name}"] = sum(values) / len(values) if values else float("nan")
        self.last_transcripts = [{"scenario": i["scenario"].to_dict(), "seed": i["seed"], "reward": i["reward"],
                                  "rewards": i["rewards"], **i["transcript"].to_dict()} for i in infos]


def trl_reward_functions(rewards: Mapping[str, tuple[RewardFn, float]]) -> tuple[list[Any], list[float]]:
    """GRPOTrainer ``reward_funcs`` and ``reward_weights`` from ``{name: (fn, weight)}``.

    Each wrapper reads the ``transcript`` and ``scenario`` columns the rollout returns and calls the
    pure reward function; ``None`` (nothing to judge) passes through, which TRL leaves out.
    """
    funcs = []
    for name, (fn, _) in rewards.items():
        def reward(prompts=None, completions=None, transcript=None, scenario=None, _fn=fn, **_: Any) -> list[Any]:
            if transcript is None or scenario is None:
                raise ValueError("the simulator rewards need the 'transcript' and 'scenario' columns that "
                                 "SimulatorRollout returns; pass rollout_func=SimulatorRollout(...)")
            return [_fn(t, s) for t, s in zip(transcript, scenario)]
        reward.__name__ = name
        funcs.append(reward)
    return funcs, [w for _, w in rewards.values()]
