"""End to end on CPU in about a minute: develop, train, validate, optimize, deploy and serve a small CNN,
with every phase measured by carbond, then the lifecycle and comparison reports with their plots.

The data is scikit-learn's copy of the UCI handwritten digits (1,797 8×8 images, 10 classes), which
ships inside the scikit-learn package: nothing is downloaded.

    pip install 'carbond[optimize,reports]' scikit-learn
    python docs/examples/optimize_digits.py --out /tmp/digits            # the configured store
    python docs/examples/optimize_digits.py --out /tmp/digits --store sqlite:///tmp/digits/carbond.db

With a carbond daemon on the machine, the runs are registered with it and it measures them (and
writes them to its store: pass the same store with --store, or leave both at the configured one);
without one, each run measures its own process and writes to the store. Outputs in --out:
variants.csv (the compare() DataFrame), lifecycle.html/.md, compare.html/.md, one PNG per plot, and
the deployed model (TorchScript).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn

PROJECT = "digits"


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load_digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train / validation / test splits (60/20/20, fixed seed), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


def accuracy(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = split
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


def train(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor], *, epochs: int, lr: float, run: object) -> None:
    x, y = split
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 32):
            idx = order[i:i + 32]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            run.log(samples=len(idx), loss=loss.item())
        run.log(epochs=1)
        run.progress(epoch + 1, epochs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for the reports, plots, CSV and model")
    p.add_argument("--store", help="store URL the runs go to and the reports read (default: the configured store)")
    p.add_argument("--socket", help="the carbond daemon's socket (default: the configured one)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds each variant is benchmarked, at least")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.store:
        os.environ["CARBOND_STORE"] = args.store  # where in-process runs are written, and what the reports read
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    import carbond
    from carbond.optimize import compare

    data = load_digits()
    started = time.monotonic()

    # development: a small learning-rate sweep, two epochs each
    best_lr, best_acc = 0.0, -1.0
    for lr in (3e-3, 1e-2):
        with carbond.track("digits-cnn-sweep", project=PROJECT, phase="development", tags={"lr": lr},
                           socket=args.socket) as run:
            model = DigitsCNN()
            train(model, data["train"], epochs=2, lr=lr, run=run)
            acc = accuracy(model, data["val"])
            run.log(accuracy=acc)
        if acc > best_acc:
            best_lr, best_acc = lr, acc
    print(f"development: best lr {best_lr} (validation accuracy {best_acc:.3f})")

    # training
    with carbond.track("digits-cnn", project=PROJECT, phase="training", socket=args.socket) as run:
        model = DigitsCNN()
        train(model, data["train"], epochs=args.epochs, lr=best_lr, run=run)
    print(f"training: {run.result.energy_j:.1f} J ({run.result.measured_by}), {run.result.duration_s:.1f} s")

    # validation
    with carbond.track("digits-cnn", project=PROJECT, phase="validation", socket=args.socket) as run:
        val_acc = accuracy(model, data["val"])
        run.log(examples=len(data["val"][1]), accuracy=val_acc)
    print(f"validation: accuracy {val_acc:.3f}")

    # inference: variants side by side, accuracy on the held-out test split
    x_test, _ = data["test"]
    sample = x_test[:64]
    calibration = [data["train"][0][i:i + 64] for i in range(0, 512, 64)]
    variants = ["baseline", "pruned-50", "pruned-channels-25", "quantized-int8", "quantized-static-int8",
                "pruned-50+quantized-int8"]
    df = compare(model, sample, variants, eval_fn=lambda m: accuracy(m, data["test"]), calibration=calibration,
                 n_batches=50, min_time_s=args.min_time, job="digits-cnn-serve", project=PROJECT, socket=args.socket)
    df.to_csv(out / "variants.csv", index=False)
    shown = ["size_bytes", "nonzero_params", "latency_ms_p50", "energy_j_per_item", "accuracy", "energy_change_pct"]
    print(df[shown].to_string())

    # deployment: the variant with the least energy per item within 1 point of the baseline's accuracy
    base_acc = float(df.loc["baseline", "accuracy"])
    eligible = df[(df["accuracy"] >= base_acc - 0.01) & df["energy_j_per_item"].notna()]
    chosen = str(eligible["energy_j_per_item"].idxmin()) if len(eligible) else "baseline"
    with carbond.track("digits-cnn", project=PROJECT, phase="deployment", tags={"variant": chosen},
                       socket=args.socket) as run:
        from carbond.optimize import apply_variant, save

        deployed, _, _ = apply_variant(model, chosen, example=sample, calibration=calibration)
        with torch.inference_mode():
            saved = save(torch.jit.trace(deployed, sample), out / "deployed.pt")
        run.log(bytes=saved)
    print(f"deployment: {chosen} ({saved:,} bytes) -> {out / 'deployed.pt'}")

    write_reports(out, list(df["run"]), args.store)
    print(f"done in {time.monotonic() - started:.0f} s; reports in {out}")


def write_reports(out: Path, runs: list[str], store_url: str | None) -> None:
    """The lifecycle report of the project and the comparison of the variants, as HTML and Markdown, plus PNGs."""
    from carbond.config import load_settings
    from carbond.reports.build import compare_report, lifecycle_report
    from carbond.reports.render import render
    from carbond.store import open_configured_store

    settings = load_settings(None, {"store.url": store_url} if store_url else {}).settings
    store = open_configured_store(settings.store, readonly=True)
    try:
        reports = {
            "lifecycle": lifecycle_report(store, project=PROJECT, plots=True),
            "compare": compare_report(store, runs=runs, per="items", plots=True),
        }
    finally:
        store.close()
    for name, report in reports.items():
        if report is None:
            raise SystemExit(f"no data for the {name} report in {settings.store.url}")
        (out / f"{name}.html").write_text(render(report, "html"), encoding="utf-8")
        (out / f"{name}.md").write_text(render(report, "md"), encoding="utf-8")
        for fig in report.figures:
            (out / f"{name}-{fig.name}.png").write_bytes(fig.png)


if __name__ == "__main__":
    main()
