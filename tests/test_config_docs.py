"""Every key of every stage config is documented: a comment on its line or just above it."""

import dataclasses
import inspect

import pytest

from usersim.data_prep.config import DataPrepConfig
from usersim.eval.config import EvalConfig
from usersim.train.config import TrainConfig
from usersim.rl.config import RLConfig


def _dataclasses(cls, seen=None):
    seen = seen if seen is not None else set()
    if cls in seen:
        return seen
    seen.add(cls)
    for f in dataclasses.fields(cls):
        tp = f.type if not isinstance(f.type, str) else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for value in (default if isinstance(default, list) else [default]):
            if dataclasses.is_dataclass(value):
                _dataclasses(type(value), seen)
        if tp is not None and dataclasses.is_dataclass(tp):
            _dataclasses(tp, seen)
    return seen


@pytest.mark.parametrize("root", [DataPrepConfig, TrainConfig, EvalConfig, RLConfig], ids=lambda c: c.__name__)
def test_every_config_key_has_a_comment(root):
    undocumented = []
    for cls in _dataclasses(root):
        lines = inspect.getsource(cls).splitlines()
        for f in dataclasses.fields(cls):
            idx = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{f.name}:"))
            documented = "#" in lines[idx] or lines[idx - 1].strip().startswith("#")
            if not documented:
                undocumented.append(f"{cls.__name__}.{f.name}")
    assert not undocumented, f"config keys without a comment: {undocumented}"
