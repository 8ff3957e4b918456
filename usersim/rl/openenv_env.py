"""The simulated user as an OpenEnv environment (openenv-core 0.3: ``Environment`` with Action/Observation).

    env = UserSimOpenEnv(user, scenarios, max_turns=4, rewards={"goal_progress": 1.0})
    obs = env.reset(seed=0)                      # obs.user_message: the user's opening ("" if the assistant opens)
    obs = env.step(AssistantMessage(message="Hi! What can I do for you?"))
    obs.user_message, obs.done, obs.reward       # reward on the last step only, as in usersim.rl.env

It can be served like any OpenEnv environment (``openenv.core.env_server.http_server``; one instance per
session: ``SUPPORTS_CONCURRENT_SESSIONS``), and trained against in-process or remotely through TRL's
environment mode: :class:`OpenEnvConversation` is the ``environment_factory`` class that drives it, the
pattern TRL documents for OpenEnv environments. ``user`` is any simulated user of usersim.users.
Install with ``pip install openenv-core`` (``make setup`` does).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence
from uuid import uuid4

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field

from usersim.rl.env import UserSimEnv
from usersim.rl.scenarios import Scenario
from usersim.rl.tool_env import ToolConversation


class AssistantMessage(Action):
    """The policy's action: one assistant message."""

    message: str = Field(..., description="the assistant's message to the user")


class UserReply(Observation):
    """What the environment returns: the simulated user's message and the episode's state."""

    user_message: str = Field(default="", description="the user's reply ('' once the user has ended)")
    ended_by_user: bool = Field(default=False, description="the simulated user closed the conversation")
    hit_turn_limit: bool = Field(default=False, description="the turn limit ended the episode")
    scenario: str = Field(default="", description="the scenario id of the episode")


class UserSimOpenEnv(Environment[AssistantMessage, UserReply, State]):
    """usersim.rl.env.UserSimEnv behind OpenEnv's ``reset`` / ``step`` / ``state``."""

    SUPPORTS_CONCURRENT_SESSIONS = True  # every instance holds its own episode; the user model is read-only

    def __init__(self, user: Any, scenarios: Sequence[Scenario], *, max_turns: int = 4,
                 rewards: Mapping[str, float] | None = None, generation: Mapping[str, Any] | None = None):
        super().__init__()
        self._scenarios = {s.id: s for s in scenarios}
        self._env = UserSimEnv(user, list(scenarios), max_turns=max_turns, rewards=rewards, generation=generation)
        self._state = State(episode_id=None, step_count=0)
        self._info: dict[str, Any] = {}

    def reset(self, seed: Optional[int] = None, episode_id: Optional[str] = None, scenario: str | None = None,
              **kwargs: Any) -> UserReply:
        if scenario is not None and scenario not in self._scenarios:
            raise KeyError(f"scenario {scenario!r} is not in this environment's pool")
        opening, self._info = self._env.reset(seed=seed, scenario=self._scenarios.get(scenario) if scenario else None)
        self._state = State(episode_id=episode_id or str(uuid4()), step_count=0)
        return UserReply(user_message=opening, done=False, reward=None, scenario=self._info["scenario"].id)

    def step(self, action: AssistantMessage, timeout_s: Optional[float] = None, **kwargs: Any) -> UserReply:
        if not self._info:
            raise RuntimeError("reset() before step()")
        reply, reward, terminated, truncated, self._info = self._env.step(action.message)
        self._state.step_count += 1
        done = terminated or truncated
        return UserReply(user_message=reply, done=done, reward=reward if done else None, ended_by_user=terminated,
                         hit_turn_limit=truncated, scenario=self._info["scenario"].id,
                         metadata={"rewards": dict(self._info["rewards"])} if done else {})

    @property
    def state(self) -> State:
        return self._state

    @property
    def transcript(self) -> Any:
        return self._info.get("transcript")


class OpenEnvConversation(ToolConversation):
    """TRL ``environment_factory`` class over an OpenEnv environment of this module (in-process or a client
    with the same ``reset``/``step``): the policy talks to the user through ``send_message``."""

    def __init__(self, env: Any):
        self.env = env
        self._last: UserReply | None = None

    def _start(self, scenario: str | None, seed: int | None) -> str:
        self._last = self.env.reset(seed=seed, scenario=scenario)
        return self._last.user_message

    def _step(self, message: str) -> tuple[str, bool, bool]:
        self._last = self.env.step(AssistantMessage(message=message))
        return self._last.user_message, self._last.ended_by_user, self._last.hit_turn_limit

    def get_reward(self) -> float:
        """The episode's reward once it is over (0.0 for an episode the policy left before it ended)."""
        return float(self._last.reward or 0.0) if self._last is not None and self._last.done else 0.0
