"""usersim: train and evaluate user simulators from real human dialogue.

The runtime entry point is :class:`usersim.simulator.UserSimulator` (imported lazily so that
``import usersim`` stays light).
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "UserSimulator":
        from usersim.simulator import UserSimulator

        return UserSimulator
    raise AttributeError(name)
