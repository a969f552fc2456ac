"""Run logging: metrics.jsonl (one object per logged step / evaluation), optional TensorBoard,
and curves.png at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, out: Path, resume_step: int | None = None) -> None:
        self.path = out / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # drop lines logged after the checkpoint we resume from (they will be redone)
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        elif self.path.exists():
            self.path.unlink()
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out / "tb"))
        except ImportError:  # tensorboard is optional
            pass

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def plot_curves(metrics_path: Path, out_png: Path) -> None:
    """Loss and kNN top-1 against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read(metrics_path)
    train = [r for r in records if "loss" in r]
    evals = [{"step": r["step"], "knn_top1": r.get("knn_top1", r.get("knn_top1_init"))}
             for r in records if "knn_top1" in r or "knn_top1_init" in r]  # step 0 = random init
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train])
    ax1.set(xlabel="step", ylabel="loss", title="training loss")
    ax2.plot([r["step"] for r in evals], [r["knn_top1"] for r in evals], marker="o")
    ax2.set(xlabel="step", ylabel="kNN top-1 (%)", title="kNN monitor (held-out split)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
