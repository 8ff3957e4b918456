"""usersim chat: the loop (ends on the simulator's end, /quit, EOF) and the CLI driven through stdin."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from usersim.data_prep.prompt_format import Condition
from usersim.data_prep.schema import ASSISTANT, USER, Turn
from tiny_run import build_tiny_run
from usersim.chat import END_LINE, QUIT_LINE, USER_LABEL, cli, parse_style, run_chat
from usersim.simulator import SimulatorTurn, UserSimulator

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


class ScriptedSimulator:
    """Stands in for UserSimulator: answers from a script, records the histories it was shown."""

    def __init__(self, turns):
        self.turns = list(turns)
        self.seen = []

    def respond_batch(self, histories, conditions=None, seed=None, **generation):
        self.seen.append(list(histories[0]))
        text = self.turns.pop(0)
        return [SimulatorTurn("", True, 3) if text is None else SimulatorTurn(text, False, 2)]


def lines(*items):
    it = iter(items)
    return lambda: next(it)


def test_chat_ends_when_the_simulator_ends_the_conversation():
    sim, out = ScriptedSimulator(["hi", "thanks bye", None]), io.StringIO()
    history = run_chat(sim, Condition(), read_line=lines("hello\n", "you are welcome\n"), out=out)
    assert history == [Turn(USER, "hi"), Turn(ASSISTANT, "hello"), Turn(USER, "thanks bye"),
                       Turn(ASSISTANT, "you are welcome")]
    assert out.getvalue().rstrip().endswith(END_LINE)
    assert sim.turns == []


def test_chat_ends_on_quit_and_on_eof_and_skips_empty_lines():
    sim, out = ScriptedSimulator(["hi", "more"]), io.StringIO()
    history = run_chat(sim, Condition(), read_line=lines("\n", "hello\n", "/quit\n"), out=out)
    assert history == [Turn(USER, "hi"), Turn(ASSISTANT, "hello"), Turn(USER, "more")]
    assert out.getvalue().rstrip().endswith(QUIT_LINE)
    sim, out = ScriptedSimulator(["hi"]), io.StringIO()
    assert run_chat(sim, Condition(), read_line=lines(""), out=out) == [Turn(USER, "hi")]
    assert out.getvalue().rstrip().endswith(QUIT_LINE)


def test_no_user_first_lets_the_person_open():
    sim = ScriptedSimulator(["oh hi", None])
    history = run_chat(sim, Condition(), read_line=lines("Hello, how can I help?\n", "ok\n"), out=io.StringIO(),
                       user_first=False)
    assert sim.seen[0] == [Turn(ASSISTANT, "Hello, how can I help?")]
    assert history[:2] == [Turn(ASSISTANT, "Hello, how can I help?"), Turn(USER, "oh hi")]


def test_parse_style():
    assert parse_style("length=short, casing=lower") == {"length": "short", "casing": "lower"}
    assert parse_style("") == {}
    with pytest.raises(ValueError, match="colour"):
        parse_style("colour=red")
    with pytest.raises(ValueError, match="key=value"):
        parse_style("length")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("tiny"), train_steps=4)


def test_real_simulator_chat_is_reproducible(run_dir):
    sim = UserSimulator.from_pretrained(run_dir, device="cpu")
    outs = []
    for _ in range(2):
        out = io.StringIO()
        run_chat(sim, Condition(goal="walks"), read_line=lines("hello\n", "sure\n", "/quit\n"), out=out, seed=4,
                 max_new_tokens=8)
        outs.append(out.getvalue())
    assert outs[0] == outs[1]
    assert USER_LABEL in outs[0]


def test_usersim_chat_through_stdin(run_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "usersim.cli", "chat", str(run_dir), "--goal", "walks", "--knows", "I have two dogs",
         "--style", "length=short", "--seed", "1", "--max-new-tokens", "8"],
        input="hello there\n/quit\n", capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(USER_LABEL) + proc.stdout.count(END_LINE) >= 1
    assert QUIT_LINE in proc.stdout or END_LINE in proc.stdout


def test_usersim_chat_bad_arguments_are_clear_errors(tmp_path, capsys):
    assert cli([str(tmp_path), "--style", "colour=red"]) == 2
    assert "colour" in capsys.readouterr().err
    assert cli([str(tmp_path)]) == 1  # not a run directory: a message, not a traceback
    assert "adapter_model.safetensors" in capsys.readouterr().err


def _read_until(fd, needle, deadline_s=180.0):
    import select
    import time

    buf, end = b"", time.monotonic() + deadline_s
    while needle.encode() not in buf:
        if time.monotonic() > end:
            raise AssertionError(f"no {needle!r} in terminal output: {buf.decode(errors='replace')!r}")
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_usersim_chat_in_a_terminal(run_dir):
    import pty

    argv = [sys.executable, "-m", "usersim.chat", str(run_dir), "--no-user-first", "--max-new-tokens", "4"]
    pid, fd = pty.fork()
    if pid == 0:  # child: run the chat on the pseudo-terminal
        try:
            os.chdir(REPO)
            os.execve(sys.executable, argv, {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
        finally:
            os._exit(127)  # only reached if exec failed: never continue pytest in the child
    try:
        assert "Assistant (you): " in _read_until(fd, "Assistant (you): ")
        os.write(fd, b"hello there\r")
        reply = _read_until(fd, "Assistant (you): ")  # the simulator answered (or ended) and prompts again
        assert USER_LABEL in reply or END_LINE in reply
        if END_LINE not in reply:
            os.write(fd, b"/quit\r")
            assert QUIT_LINE in _read_until(fd, QUIT_LINE)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        os.close(fd)
