"""Overfitting detection from a training history (the Trainer's logged losses)."""

from __future__ import annotations


def overfitting_signal(history: list[dict], tolerance: float = 0.02) -> str | None:
    """A description when validation loss rose above its best by more than `tolerance` (relative)
    while training loss kept falling over the same steps; None otherwise."""
    evals = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
    trains = [(r["step"], r["loss"]) for r in history if "loss" in r]
    if len(evals) < 2 or len(trains) < 2:
        return None
    best_step, best = min(evals, key=lambda e: e[1])
    last_step, last = evals[-1]
    if last_step == best_step or last <= best * (1 + tolerance):
        return None
    def train_near(step):
        return min(trains, key=lambda t: abs(t[0] - step))[1]
    if train_near(last_step) < train_near(best_step):
        return (f"validation loss rose from {best:.4f} (step {best_step}) to {last:.4f} (step {last_step}) "
                f"while training loss fell from {train_near(best_step):.4f} to {train_near(last_step):.4f}")
    return None
