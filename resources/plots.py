"""Pictures where people would rather look than read: small PNG charts (matplotlib, headless Agg backend).

Each function returns the PNG bytes; the assets write them beside their artifact and embed them in the
materialization's Markdown metadata (`markdown_image`), the pattern Dagster's docs use for plots.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

SIZE = (6.0, 3.2)  # inches at 80 dpi: ~480 x 256 px, a few tens of kB


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=SIZE, dpi=80)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows the PNG inline in the Dagster UI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def loss_curve(history: Sequence[Mapping]) -> bytes:
    """Training and validation loss by optimizer step (the base model's validation loss at step 0)."""
    plt, fig, ax = _figure()
    for key, label, style in (("loss", "training loss", "-"), ("eval_loss", "validation loss", "o-")):
        points = [(row["step"], row[key]) for row in history if row.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=label, markersize=4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("fine-tuning loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(plt, fig)


def scores_by_metric(scores: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> bytes:
    """One group of bars per metric, one bar per contender (base, candidate, champion, ...)."""
    plt, fig, ax = _figure()
    roles = list(scores)
    shown = [m for m in metrics if any(m in scores[r] for r in roles)]
    width = 0.8 / max(1, len(roles))
    for i, role in enumerate(roles):
        xs = [j + i * width for j in range(len(shown))]
        ax.bar(xs, [scores[role].get(m, 0.0) for m in shown], width=width, label=role)
    ax.set_xticks([j + width * (len(roles) - 1) / 2 for j in range(len(shown))], shown, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("golden-set scores by contender")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(plt, fig)


def counts(counter: Mapping[str, int], title: str) -> bytes:
    """Horizontal bars, largest first (redactions per entity type, drops per reason)."""
    plt, fig, ax = _figure()
    items = sorted(counter.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in items] or ["(none)"], [v for _, v in items] or [0])
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(plt, fig)


def over_time(days: Sequence[str], series: Mapping[str, Sequence[float | None]], limits: Mapping[str, float],
              title: str) -> bytes:
    """Lines per measure over days, with each measure's threshold dashed."""
    plt, fig, ax = _figure()
    for name, values in series.items():
        points = [(d, v) for d, v in zip(days, values) if v is not None]
        if points:
            line, = ax.plot(*zip(*points), "o-", label=name, markersize=4)
            if name in limits:
                ax.axhline(limits[name], linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    return _png(plt, fig)
