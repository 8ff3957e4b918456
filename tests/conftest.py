import os

# Nothing may reach a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory):
    """One tiny trained run directory (tests/tiny_run.py), shared by the runtime and simulation tests."""
    from tiny_run import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("tiny"), train_steps=8)


@pytest.fixture(scope="session")
def tiny_sim(tiny_run_dir):
    from usersim.simulator import UserSimulator

    return UserSimulator.from_pretrained(tiny_run_dir, device="cpu")
