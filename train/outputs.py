"""What a finished run reports: train_metrics.json and loss_curve.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usersim.data_prep.run_info import peak_rss_mb
from usersim.train.loop import TrainHistory


def train_metrics(history: TrainHistory, run_stats: dict[str, Any], wall_time_s: float, world_size: int) -> dict[str, Any]:
    import torch

    metrics = {
        "final_loss": history.losses[-1][1] if history.losses else float("nan"),
        "eval_loss": history.eval_losses[-1][1] if history.eval_losses else float("nan"),
        "steps": history.step,
        "tokens": history.tokens,
        "supervised_tokens": history.supervised_tokens,
        "nonpad_share": history.tokens / history.slots if history.slots else float("nan"),
        "nonpad_share_min_step": min(history.nonpad_shares) if history.nonpad_shares else float("nan"),
        "tokens_per_second": run_stats["tokens"] / run_stats["wall_s"] if run_stats["wall_s"] > 0 else float("nan"),
        "train_loop_s": run_stats["wall_s"],
        "peak_rss_mb": peak_rss_mb(),
        "wall_time_s": wall_time_s,
        "world_size": world_size,
        "eval_losses": history.eval_losses,
    }
    if torch.cuda.is_available():
        metrics["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return metrics


def plot_loss_curve(history: TrainHistory, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history.losses:
        steps, losses = zip(*history.losses)
        ax.plot(steps, losses, label="train loss", linewidth=1)
    if history.eval_losses:
        steps, losses = zip(*history.eval_losses)
        ax.plot(steps, losses, "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per supervised token (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
