"""The simulated user in TRL's environment mode (``GRPOTrainer(environment_factory=...)``, TRL >= 1.16).

In that mode TRL owns generation and tokenisation: the policy (an instruct model with a tool-calling
chat template) talks, and calls the environment's public methods as tools. Here the environment is
one conversation with a simulated user, and the policy reaches the user through one tool::

    send_message(message: str) -> str    # the user's reply, or a note that the user has left

so an episode is: the dataset row's prompt (an instruction to the assistant) plus the user's opening
message (what ``reset`` returns; TRL appends it to the last prompt message), then the policy's tool
calls, each answered by the simulated user, until the policy stops calling the tool. ``get_reward``
scores the transcript with usersim.rl.rewards (TRL calls it once per finished rollout).

    from trl import GRPOConfig, GRPOTrainer
    factory = environment_factory(user, scenarios, max_turns=4, rewards={"elicited_after_asking": 1.0})
    trainer = GRPOTrainer(model=policy, args=GRPOConfig(...), train_dataset=tool_dataset(scenarios, n=64),
                          environment_factory=factory)

``user`` is any simulated user of usersim.users (the trained simulator, the prompted model, an endpoint).
Each instance plays one episode at a time with :class:`usersim.rl.env.UserSimEnv`, so user turns are
not batched across rollouts (TRL steps each rollout's tool calls in turn); for batched rollouts use
the ``rollout_func`` of usersim.rl.rollout. The policy needs a chat template that TRL can parse tool
calls from (Qwen3, Llama 3.1/3.2, GPT-OSS, Gemma 4, ...); SmolLM2's template is not one of them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from usersim.rl.env import UserSimEnv
from usersim.rl.rewards import combine, resolve_rewards
from usersim.rl.scenarios import Scenario
from usersim.simulator import derive_seed

INSTRUCTION = ("You are a helpful assistant in a chat with a user. Talk to the user only through the send_message "
               "tool: each call sends one message and returns the user's reply. Stop calling it when the "
               "conversation is over.")
OPENING = "\n\nThe user's first message: "
ASSISTANT_OPENS = "\n\nThe user is waiting for you to start the conversation."
USER_LEFT = "[The user has left the conversation.]"
TURNS_USED = "[The conversation has reached its turn limit.]"


class ToolConversation:
    """One episode behind the ``send_message`` tool; subclasses say how an episode starts (``_start``) and steps
    (``_step``). TRL exposes every public method but ``reset`` and ``get_reward`` to the policy as a tool."""

    _started = False
    _ended = False
    _truncated = False

    def reset(self, scenario: str | None = None, seed: int | None = None, **_: Any) -> str:
        """Start the row's episode (its ``scenario`` id and ``seed`` columns); returns the text TRL appends."""
        opening = self._start(scenario, seed)
        self._started, self._ended, self._truncated = True, False, False
        return OPENING + opening if opening else ASSISTANT_OPENS

    def send_message(self, message: str) -> str:
        """Send one message to the user and get their reply.

        Args:
            message: The message to send to the user.

        Returns:
            The user's reply, or a note that the user has left or the turn limit is reached.
        """
        if not self._started:
            raise RuntimeError("reset() must be called before send_message()")
        if self._ended or self._truncated:
            return USER_LEFT if self._ended else TURNS_USED
        reply, self._ended, self._truncated = self._step(str(message))
        if self._ended:
            return USER_LEFT
        return reply + ("\n" + TURNS_USED if self._truncated else "")

    def _start(self, scenario: str | None, seed: int | None) -> str:
        raise NotImplementedError

    def _step(self, message: str) -> tuple[str, bool, bool]:
        raise NotImplementedError


class UserConversation(ToolConversation):
    """One episode with a simulated user (usersim.rl.env.UserSimEnv), for TRL's ``environment_factory``."""

    def __init__(self, user: Any, scenarios: Sequence[Scenario], *, max_turns: int = 4,
                 rewards: Mapping[str, float] | None = None, generation: Mapping[str, Any] | None = None):
        self._scenarios = {s.id: s for s in scenarios}
        self._rewards = resolve_rewards(rewards)
        self._env = UserSimEnv(user, list(scenarios), max_turns=max_turns, rewards=rewards, generation=generation)
        self._info: dict[str, Any] | None = None

    def _start(self, scenario: str | None, seed: int | None) -> str:
        if scenario is not None and scenario not in self._scenarios:
            raise KeyError(f"scenario {scenario!r} is not in this environment's pool")
        chosen = self._scenarios[scenario] if scenario is not None else None
        opening, self._info = self._env.reset(seed=derive_seed("tool-env", 0) if seed is None else int(seed),
                                              scenario=chosen)
        return opening

    def _step(self, message: str) -> tuple[str, bool, bool]:
        reply, _, terminated, truncated, self._info = self._env.step(message)
        return reply, terminated, truncated

    def get_reward(self) -> float:
        """The weighted rewards of the transcript as it stands (a conversation the policy left early is
        scored as it is: ``user_ended`` is 0 there)."""
        if self._info is None:
            return 0.0
        transcript, scenario = self._info["transcript"], self._info["scenario"]
        values = {name: fn(transcript, scenario) for name, (fn, _) in self._rewards.items()}
        return combine(values, {name: w for name, (_, w) in self._rewards.items()})

    @property
    def transcript(self) -> Any:
        return None if self._info is None else self._info["transcript"]


def environment_factory(user: Any, scenarios: Sequence[Scenario], **kwargs: Any) -> Callable[[], UserConversation]:
    """A factory TRL calls once per concurrent rollout; every instance shares ``user`` (one model in memory)."""
    scenarios = list(scenarios)
    return lambda: UserConversation(user, scenarios, **kwargs)


def tool_dataset(scenarios: Sequence[Scenario], n: int, seed: int = 0,
                 instruction: str = INSTRUCTION) -> list[dict[str, Any]]:
    """``n`` rows cycling through the scenarios: a conversational prompt plus the ``scenario`` and ``seed``
    columns that TRL passes to ``reset`` (``datasets.Dataset.from_list(rows)`` for the trainer)."""
    if not scenarios:
        raise ValueError("no scenarios")
    return [{"prompt": [{"role": "user", "content": instruction}], "scenario": scenarios[i % len(scenarios)].id,
             "seed": derive_seed(seed, "tool-row", i) % (2**62)} for i in range(n)]
