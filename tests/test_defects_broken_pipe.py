"""``usersim show … | head``: a reader that stops early ends the command quietly, not with a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from usersim.data_prep.config import DataPrepConfig, FilterConfig, SourceConfig, SplitConfig
from usersim.data_prep.main import main as data_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def big_record_run(tmp_path_factory):
    """A data run whose one training record renders to ~1 MB, far more than a pipe buffers."""
    tmp = tmp_path_factory.mktemp("pipe")
    words = " ".join(f"word{i}" for i in range(40_000))  # ~400 kB per turn
    chat = {"messages": [[{"sender": "ann", "text": words}], [{"sender": "ben", "text": "ok"}],
                         [{"sender": "ann", "text": words}]], "prompt": "a long story"}
    (tmp / "chat.json").write_text(json.dumps({"c1": chat}))
    cfg = DataPrepConfig(sources=[SourceConfig(adapter="chitchat", path=str(tmp / "chat.json"))],
                         output_dir=str(tmp / "data"), show_progress=False,
                         filters=FilterConfig(max_turn_chars=1_000_000, max_conversation_chars=2_000_000),
                         split=SplitConfig(validation_fraction=0.0, test_fraction=0.0))
    return data_main(cfg)


def _usersim(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "usersim.cli", *args], env=env, stderr=subprocess.PIPE, **kw)


def test_show_into_a_reader_that_closes_early_exits_quietly(big_record_run):
    proc = _usersim("show", str(big_record_run), "--record", "0", "--no-color", stdout=subprocess.PIPE)
    first = proc.stdout.readline()  # like `head -1`: read one line, then stop reading
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    rc = proc.wait(timeout=120)
    assert first.startswith(b"# train[0] id=")
    assert stderr == ""
    assert rc == 141  # 128 + SIGPIPE, what shells report for a writer whose reader went away


def test_show_with_a_reader_that_reads_everything_still_exits_0(big_record_run):
    proc = _usersim("show", str(big_record_run), "--record", "0", "--no-color", stdout=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == b""
    assert out.startswith(b"# train[0] id=") and out.count(b"word39999") == 2
