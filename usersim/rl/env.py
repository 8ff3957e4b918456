"""The simulated user as an RL environment (Gymnasium-style ``reset`` / ``step``).

::

    env = UserSimEnv(UserSimulator.from_pretrained("runs/default/train"), scenarios, max_turns=6)
    user_message, info = env.reset(seed=0)            # "" when the scenario's assistant speaks first
    while True:
        user_message, reward, terminated, truncated, info = env.step(policy(info["transcript"].turns))
        if terminated or truncated:
            break

- the *action* is the assistant's message (a string); the *observation* is the simulated user's
  next message (``""`` once the user has ended); ``info["transcript"]`` is the whole conversation;
- ``terminated``: the simulated user ended the conversation (``SimulatorTurn.ends_conversation``);
  ``truncated``: the turn limit (``max_turns`` assistant messages) was reached and the user had not
  ended. After the last allowed assistant message the simulator is still asked once, so a user who
  leaves right then counts as having ended;
- the reward is 0.0 on every step but the last, where it is the weighted sum of the reward
  functions (:mod:`usersim.rl.rewards`) on the finished transcript; ``info["rewards"]`` holds each one.

:class:`BatchUserSimEnv` steps many episodes at once: one ``respond_batch`` call per step for all
live episodes. :class:`UserSimEnv` is the same engine with one episode.

Seeds: ``reset(seed=s)`` gives episode ``i`` the seed ``derive_seed(s, "episode", i)``
(or pass ``seeds=[...]`` directly). An episode's scenario (unless given) and every one of its user
turns are derived from its own seed, so the same seed and the same assistant messages replay the same
conversation whatever else shares the batch (up to the rare padding effect described in
:mod:`usersim.simulator`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from usersim.rl.rewards import RewardFn, combine, resolve_rewards
from usersim.rl.transcript import Transcript
from usersim.rl.scenarios import Scenario
from usersim.simulator import derive_seed

# The simulated user's sampling defaults in an episode (override with generation=...). Temperature, top-p
# and the end decision are the simulator's own (its run's decoding.json, else usersim.simulator.DEFAULT_GENERATION).
DEFAULT_USER_GENERATION: dict[str, Any] = {"do_sample": True, "max_new_tokens": 64}


@dataclass
class _Episode:
    scenario: Scenario
    seed: int
    opener: str
    transcript: Transcript = field(default_factory=Transcript)
    assistant_turns: int = 0
    user_turns: int = 0
    opening_retries: int = 0
    rewards: dict[str, float | None] = field(default_factory=dict)
    reward: float = 0.0


class BatchUserSimEnv:
    """Many episodes against one simulator, stepped together through ``respond_batch``.

    ``simulator``: a :class:`usersim.simulator.UserSimulator`; ``scenarios``: the pool an episode's
    scenario is drawn from when ``reset`` is not told which; ``max_turns``: assistant messages per
    episode; ``rewards``: reward names with weights (``{"user_ended": 1.0}``) or ``{name: (fn, w)}``;
    ``generation``: the simulator's sampling options (see ``DEFAULT_USER_GENERATION``);
    ``opening_retries``: when the user is to open and the simulator ends the conversation before
    saying anything, it is re-sampled this many times (new derived seeds); if it still ends, the
    episode starts with the assistant instead and ``info["opener"]`` says so.
    """

    def __init__(self, simulator: Any, scenarios: Sequence[Scenario] = (), *, max_turns: int = 8,
                 rewards: Mapping[str, float] | Mapping[str, tuple[RewardFn, float]] | None = None,
                 generation: Mapping[str, Any] | None = None, opening_retries: int = 3):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.simulator = simulator
        self.scenarios = list(scenarios)
        self.max_turns = int(max_turns)
        if isinstance(rewards, Mapping) and rewards and all(isinstance(v, tuple) for v in rewards.values()):
            self.rewards = dict(rewards)  # type: ignore[arg-type]
        else:
            self.rewards = resolve_rewards(rewards)  # type: ignore[arg-type]
        self.generation = {**DEFAULT_USER_GENERATION, **(generation or {})}
        self.opening_retries = int(opening_retries)
        self.episodes: list[_Episode] = []

    # -- reset -----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, *, n: int | None = None, seeds: Sequence[int] | None = None,
              scenarios: Sequence[Scenario] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
        """Start a batch of episodes; returns the opening user messages (``""`` if the assistant opens) and infos.

        The batch size is ``len(seeds)``, else ``len(scenarios)``, else ``n``, else 1. Without
        ``scenarios`` each episode draws one from the pool with its own seed.
        """
        if seeds is not None:
            episode_seeds = [int(s) for s in seeds]
        else:
            size = len(scenarios) if scenarios is not None else (n if n is not None else 1)
            base = secrets.randbits(63) if seed is None else int(seed)
            episode_seeds = [derive_seed(base, "episode", i) for i in range(size)]
        if scenarios is None:
            if not self.scenarios:
                raise ValueError("no scenarios: give the environment a scenario pool or pass scenarios= to reset")
            scenarios = [self.scenarios[derive_seed(s, "scenario") % len(self.scenarios)] for s in episode_seeds]
        if len(scenarios) != len(episode_seeds):
            raise ValueError(f"{len(episode_seeds)} seeds but {len(scenarios)} scenarios")
        self.episodes = [_Episode(scenario=sc, seed=s, opener=sc.opener) for sc, s in zip(scenarios, episode_seeds)]
        openers = [i for i, ep in enumerate(self.episodes) if ep.opener == "user"]
        for attempt in range(self.opening_retries + 1):
            if not openers:
                break
            turns = self._respond(openers, attempt)
            still_ending = []
            for i, turn in zip(openers, turns):
                ep = self.episodes[i]
                if turn.ends_conversation:
                    ep.opening_retries = attempt + 1
                    still_ending.append(i)
                else:
                    self._add_user_turn(ep, turn)
            openers = still_ending
        for i in openers:  # the user never opened: the assistant does
            self.episodes[i].opener = "assistant"
        return [self._last_user_text(ep) for ep in self.episodes], [self._info(ep) for ep in self.episodes]

    # -- step ------------------------------------------------------------------------------------
    def step(self, messages: Sequence[str | None]) -> tuple[list[str], list[float], list[bool], list[bool],
                                                            list[dict[str, Any]]]:
        """Give each live episode its assistant message (``None`` for finished ones).

        Returns per-episode ``observations, rewards, terminated, truncated, infos``; a finished
        episode keeps returning its final state with reward 0.0.
        """
        if not self.episodes:
            raise RuntimeError("call reset() before step()")
        if len(messages) != len(self.episodes):
            raise ValueError(f"{len(messages)} messages for {len(self.episodes)} episodes")
        live = []
        for i, (ep, message) in enumerate(zip(self.episodes, messages)):
            if ep.transcript.done:
                if message is not None:
                    raise ValueError(f"episode {i} is finished; pass None as its message")
                continue
            if not isinstance(message, str):
                raise TypeError(f"episode {i}: the assistant message must be a string, got {type(message).__name__}")
            ep.transcript.turns.append({"role": "assistant", "text": message})
            ep.assistant_turns += 1
            live.append(i)
        rewards = [0.0] * len(self.episodes)
        if live:
            for i, turn in zip(live, self._respond(live, "turn")):
                ep = self.episodes[i]
                if turn.ends_conversation:
                    ep.transcript.ended_by_user = True
                else:
                    self._add_user_turn(ep, turn)
                    if ep.assistant_turns >= self.max_turns:
                        ep.transcript.hit_turn_limit = True
                if ep.transcript.done:
                    ep.rewards = {name: fn(ep.transcript, ep.scenario) for name, (fn, _) in self.rewards.items()}
                    ep.reward = combine(ep.rewards, {name: w for name, (_, w) in self.rewards.items()})
                    rewards[i] = ep.reward
        observations = ["" if ep.transcript.ended_by_user else self._last_user_text(ep) for ep in self.episodes]
        terminated = [ep.transcript.ended_by_user for ep in self.episodes]
        truncated = [ep.transcript.hit_turn_limit for ep in self.episodes]
        return observations, rewards, terminated, truncated, [self._info(ep) for ep in self.episodes]

    @property
    def live(self) -> list[bool]:
        return [not ep.transcript.done for ep in self.episodes]

    # -- internals -------------------------------------------------------------------------------
    def _respond(self, indices: Sequence[int], tag: Any) -> list[Any]:
        eps = [self.episodes[i] for i in indices]
        seeds = [derive_seed(ep.seed, "user", ep.user_turns, tag) for ep in eps]
        return self.simulator.respond_batch([ep.transcript.turns for ep in eps], [ep.scenario.condition for ep in eps],
                                            seed=seeds, **self.generation)

    @staticmethod
    def _add_user_turn(ep: _Episode, turn: Any) -> None:
        ep.transcript.turns.append({"role": "user", "text": turn.text})
        ep.user_turns += 1
        ep.transcript.user_turns_cut += int(bool(getattr(turn, "hit_cap", False)))

    @staticmethod
    def _last_user_text(ep: _Episode) -> str:
        if ep.transcript.turns and ep.transcript.turns[-1]["role"] == "user":
            return ep.transcript.turns[-1]["text"]
        return ""

    @staticmethod
    def _info(ep: _Episode) -> dict[str, Any]:
        return {"scenario": ep.scenario, "transcript": ep.transcript, "seed": ep.seed, "opener": ep.opener,
                "assistant_turns": ep.assistant_turns, "opening_retries": ep.opening_retries,
                "rewards": dict(ep.rewards), "reward": ep.reward}


class UserSimEnv:
    """One episode at a time: ``reset(seed) -> (user_message, info)``, ``step(message) -> 5-tuple``.

    Same arguments as :class:`BatchUserSimEnv`; ``reset(scenario=...)`` picks the scenario
    explicitly (else it is drawn from the pool with the seed).
    """

    def __init__(self, simulator: Any, scenarios: Sequence[Scenario] = (), **kwargs: Any):
        self._batch = BatchUserSimEnv(simulator, scenarios, **kwargs)

    @property
    def max_turns(self) -> int:
        return self._batch.max_turns

    def reset(self, seed: int | None = None, scenario: Scenario | None = None) -> tuple[str, dict[str, Any]]:
        if seed is None:
            seed = secrets.randbits(63)
        obs, infos = self._batch.reset(seeds=[derive_seed(seed, "episode", 0)],
                                       scenarios=[scenario] if scenario is not None else None)
        return obs[0], infos[0]

    def step(self, assistant_message: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if not self._batch.episodes:
            raise RuntimeError("call reset() before step()")
        if not self._batch.live[0]:
            raise RuntimeError("the episode is over (terminated or truncated); call reset()")
        obs, rewards, terminated, truncated, infos = self._batch.step([assistant_message])
        return obs[0], rewards[0], terminated[0], truncated[0], infos[0]
