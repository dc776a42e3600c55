"""A PNG of the held-out metrics of every evaluated model version, for people to look at."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from worker.storage import ModelVersion

METRICS = ("ndcg@10", "map@5", "mrr@10", "accuracy@1")


def plot_versions(versions: Sequence[ModelVersion], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(v.version, v.status, dict(v.metrics["candidate"])) for v in versions if v.metrics.get("candidate")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows) + 3), 4.5))
    width = 0.8 / len(METRICS)
    for i, metric in enumerate(METRICS):
        values = [float(m.get(metric, 0.0)) for _, _, m in rows]
        xs = [x + i * width for x in range(len(rows))]
        bars = ax.bar(xs, values, width, label=metric)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks([x + width * (len(METRICS) - 1) / 2 for x in range(len(rows))])
    ax.set_xticklabels([f"{name}\n({status})" for name, status, _ in rows], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("held-out score")
    ax.set_title("factmatch model versions (each on its own training run's held-out split)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
