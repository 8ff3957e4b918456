"""One conversation between the policy and the simulated user: what the environment writes and rewards read.

Its own module so that the environment (usersim.rl.env) and the rewards (usersim.rl.rewards) both import
it and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Transcript:
    """A finished or running conversation between the policy (assistant) and the simulated user.

    ``turns``: ``[{"role": "user"|"assistant", "text": ...}]`` in order; ``ended_by_user``: the
    simulated user closed the conversation; ``hit_turn_limit``: the turn limit cut it;
    ``user_turns_cut``: user turns the simulator's ``max_new_tokens`` cut before their end.
    """

    turns: list[dict[str, str]] = field(default_factory=list)
    ended_by_user: bool = False
    hit_turn_limit: bool = False
    user_turns_cut: int = 0

    def texts(self, role: str) -> list[str]:
        return [t["text"] for t in self.turns if t["role"] == role]

    def user_texts_after_first_assistant(self) -> list[str]:
        seen_assistant, out = False, []
        for t in self.turns:
            if t["role"] == "assistant":
                seen_assistant = True
            elif seen_assistant:
                out.append(t["text"])
        return out

    @property
    def done(self) -> bool:
        return self.ended_by_user or self.hit_turn_limit

    def to_dict(self) -> dict[str, Any]:
        return {"turns": [dict(t) for t in self.turns], "ended_by_user": self.ended_by_user,
                "hit_turn_limit": self.hit_turn_limit, "user_turns_cut": self.user_turns_cut}
