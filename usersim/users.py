"""One interface for every simulated user, and the backends behind it, chosen by name.

Every system that plays the user — the trained simulator, the untuned base, the prompted instruct
model (local or endpoint), the simulator served on an inference engine — answers the same call::

    turns = user.respond_batch(histories, conditions, seed=0, **generation)
    turns[i].text, turns[i].ends_conversation, turns[i].tokens, turns[i].hit_cap

``histories``: lists of ``{"role", "text"}`` dicts (or :class:`usersim.data_prep.schema.Turn`);
``conditions``: :class:`usersim.data_prep.prompt_format.Condition` per row (or None);
``seed``: an int (row ``i`` samples with ``derive_seed(seed, i)``), one seed per row, or None —
the same rule in every backend (:func:`usersim.simulator.row_seeds`), so a row's turn depends on
its own seed and history, never on which rows share the call. ``generation`` overrides sampling
(``temperature``, ``top_p``, ``max_new_tokens``, ``do_sample``; each backend refuses what it cannot do).

Backends by name (``usersim chat --user NAME``, ``usersim rl user=NAME``, :func:`load_user`):

=========================  ==================================================================
``simulator``              the trained simulator of ``run_dir`` (base + LoRA adapter, local)
``base``                   the same base model with the adapter off (the untuned baseline)
``prompted``               the prompted instruct model (SmolLM2-135M-Instruct, offline) told to
                           play the user; ``prompted:DIR`` any local instruct checkpoint
``prompted-endpoint:URL``  the prompted user on an OpenAI-compatible chat-completions server
                           (``model=`` the served name, ``api_key_env=`` the key's variable)
``completions:URL``        the trained simulator served on an OpenAI-compatible completions
                           server (vLLM, SGLang, llama.cpp; usersim.completions)
=========================  ==================================================================
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from usersim.data_prep.prompt_format import Condition
from usersim.simulator import DEFAULT_GENERATION, SimulatorTurn, UserSimulator

USER_BACKENDS = ("simulator", "base", "prompted", "prompted-endpoint", "completions")


@runtime_checkable
class SimulatedUser(Protocol):
    """What eval, chat, the RL environment and the study need from a simulated user."""

    name: str

    def respond_batch(self, histories: Sequence[Sequence[Any]], conditions: Sequence[Condition | None] | None = None,
                      seed: int | Sequence[int] | None = None, **generation: Any) -> list[SimulatorTurn]:
        ...


class BaseUser:
    """The untuned base: a loaded simulator with its adapter off, on the library's default decoding.

    The run's ``decoding.json`` (chosen on validation users for the *trained* simulator) and its end
    decision are not applied; ``generation`` overrides as for the simulator.
    """

    name = "base"

    def __init__(self, simulator: UserSimulator):
        self.simulator = simulator

    def respond_batch(self, histories: Sequence[Sequence[Any]], conditions: Sequence[Condition | None] | None = None,
                      seed: int | Sequence[int] | None = None, **generation: Any) -> list[SimulatorTurn]:
        options = {k: DEFAULT_GENERATION[k] for k in ("temperature", "top_p", "end_bias")}
        with self.simulator.adapter_disabled():
            return self.simulator.respond_batch(histories, conditions, seed=seed, **{**options, **generation})


def parse_user_spec(spec: str) -> tuple[str, str]:
    """``"kind[:argument]"`` -> ``(kind, argument)``; the kind must be one of :data:`USER_BACKENDS`."""
    kind, _, arg = spec.partition(":")
    if kind not in USER_BACKENDS:
        raise ValueError(f"unknown user backend {kind!r} in {spec!r}; known: {', '.join(USER_BACKENDS)}")
    if kind in ("prompted-endpoint", "completions") and not arg:
        raise ValueError(f"{kind} needs the server's base URL: {kind}:http://host:port/v1")
    if kind in ("simulator", "base") and arg:
        raise ValueError(f"{kind} takes its model from run_dir, not from {spec!r}")
    return kind, arg


def load_user(spec: str, *, run_dir: str | None = None, model: str = "", api_key_env: str = "",
              device: str | None = None, trust_remote_code: bool = False,
              simulator: UserSimulator | None = None) -> Any:
    """The simulated user named by ``spec`` (see the module table).

    ``run_dir``: the train run (``simulator``, ``base``, ``completions``: its tokenizer and decoding);
    ``model``: the served model's name (endpoints); ``simulator``: an already loaded simulator to
    reuse for ``simulator``/``base`` (one model in memory for both).
    """
    kind, arg = parse_user_spec(spec)
    if kind in ("simulator", "base"):
        if simulator is None:
            if not run_dir:
                raise ValueError(f"user backend {kind!r} needs run_dir (a `usersim train` run directory)")
            simulator = UserSimulator.from_pretrained(run_dir, device=device, trust_remote_code=trust_remote_code)
        return simulator if kind == "simulator" else BaseUser(simulator)
    if kind == "completions":
        from usersim.completions import CompletionsConfig, CompletionsUser

        if not run_dir or not model:
            raise ValueError("completions:URL needs run_dir (the served run's tokenizer and decoding) and model= "
                             "(the name the server serves it under)")
        return CompletionsUser.from_run(run_dir, CompletionsConfig(endpoint=arg, model=model, api_key_env=api_key_env))
    from usersim.prompted import SMOLLM2, PromptedConfig, PromptedUser

    if kind == "prompted":
        cfg = PromptedConfig(model=arg or SMOLLM2)
    else:
        if not model:
            raise ValueError("prompted-endpoint:URL needs model= (the chat model to request)")
        cfg = PromptedConfig(endpoint=arg, endpoint_model=model, api_key_env=api_key_env)
    return PromptedUser(cfg, device=device or "", trust_remote_code=trust_remote_code)
