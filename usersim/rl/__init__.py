"""The simulated user in an assistant's RL loop: environment, rewards, and a TRL GRPO rollout.

- :mod:`usersim.rl.scenarios`: who the simulated users are (held-out records or hand-written);
- :mod:`usersim.rl.env`: ``UserSimEnv`` / ``BatchUserSimEnv`` (Gymnasium-style reset/step);
- :mod:`usersim.rl.rewards`: pure reward functions of (transcript, scenario);
- :mod:`usersim.rl.rollout`: ``SimulatorRollout``, a ``rollout_func`` for TRL's ``GRPOTrainer``;
- :mod:`usersim.rl.main`: ``usersim rl`` (``make rl``).

TRL is imported only by ``usersim.rl.main``; the environment and rewards need torch + transformers.
"""

from usersim.rl.env import BatchUserSimEnv, Transcript, UserSimEnv
from usersim.rl.rewards import REWARDS
from usersim.rl.scenarios import Scenario, load_scenarios_file, scenarios_from_dataset, scenarios_from_dicts

__all__ = ["BatchUserSimEnv", "REWARDS", "Scenario", "Transcript", "UserSimEnv", "load_scenarios_file",
           "scenarios_from_dataset", "scenarios_from_dicts"]
