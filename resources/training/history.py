"""The loss curve of a training run, as the Trainer logs it and the artifact keeps it (`training_history.json`)."""

from __future__ import annotations

LOGGED = ("loss", "eval_loss", "learning_rate")


def history_row(entry: dict) -> dict:
    row = {"step": entry["step"], "epoch": round(entry.get("epoch") or 0, 3)}
    row.update({k: round(v, 5) for k, v in entry.items() if k in LOGGED})
    return row


def history(log_history: list[dict], base_eval_loss: float | None) -> list[dict]:
    """The loss curve: the base model's validation loss at step 0, then every logged loss and evaluation."""
    rows = [{"step": 0, "epoch": 0, "eval_loss": round(base_eval_loss, 5)}] if base_eval_loss is not None else []
    return rows + [history_row(entry) for entry in log_history if any(k in entry for k in LOGGED)]
