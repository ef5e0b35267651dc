"""Pictures: the training curve, the confusion matrix and the reliability diagram, as PNG files.

matplotlib (headless Agg backend) is the optional `plots` extra; CJK label names need a font that has the glyphs,
which few machines ship, so the extra also brings `mplfonts` (Noto Sans CJK SC, read as a file: the package is never
imported). A font already installed on the system is preferred when matplotlib knows one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptcli.errors import PtcliError

# Fonts with Han glyphs that matplotlib may find installed, best first.
_CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Micro Hei",
                 "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC")
_BUNDLED = "NotoSansCJKsc-Regular.otf"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    if not available():
        raise PtcliError("plots need matplotlib: pip install 'ptcli[plots]'")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _use_cjk_font()
    return plt


def _bundled_font() -> Path | None:
    spec = importlib.util.find_spec("mplfonts")  # locate the package's files without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / _BUNDLED
    return path if path.is_file() else None


def cjk_font() -> str | None:
    """The family name of a font with Han glyphs, registering the bundled one if nothing is installed."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    for family in _CJK_FAMILIES:
        if family in installed:
            return family
    bundled = _bundled_font()
    if bundled is None:
        return None
    font_manager.fontManager.addfont(str(bundled))
    return font_manager.FontProperties(fname=str(bundled)).get_name()


def _use_cjk_font() -> None:
    import matplotlib

    family = cjk_font()
    if family is not None:
        matplotlib.rcParams["font.family"] = "sans-serif"
        matplotlib.rcParams["font.sans-serif"] = [family, "DejaVu Sans"]
    matplotlib.rcParams["axes.unicode_minus"] = False  # CJK fonts often lack U+2212


def training_curve(history: Sequence[dict[str, float]], best_epoch: int, untrained: dict[str, float],
                   path: Path) -> Path:
    """Train loss, dev loss and dev accuracy per epoch (epoch 0 = the untrained prompts), best epoch marked."""
    plt = _pyplot()
    epochs = [0] + [int(h["epoch"]) for h in history]
    dev_loss = [untrained["loss"]] + [h["dev_loss"] for h in history]
    dev_acc = [untrained["accuracy"]] + [h["dev_accuracy"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(7, 4), dpi=120)
    loss_ax.plot(epochs[1:], [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss")
    loss_ax.plot(epochs, dev_loss, "s--", color="tab:orange", label="dev loss")
    loss_ax.set_xlabel("epoch (0 = untrained prompts)")
    from matplotlib.ticker import MaxNLocator

    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    loss_ax.set_ylabel("loss")
    acc_ax = loss_ax.twinx()
    acc_ax.plot(epochs, dev_acc, "^-", color="tab:green", label="dev accuracy")
    acc_ax.set_ylabel("dev accuracy")
    acc_ax.set_ylim(0, 1.02)
    loss_ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    handles = loss_ax.get_legend_handles_labels()[0] + acc_ax.get_legend_handles_labels()[0]
    loss_ax.legend(handles=handles, loc="center right", fontsize=8)
    loss_ax.set_title("ptcli training")
    return _save(fig, path)


def confusion(labels: Sequence[str], matrix: Sequence[Sequence[int]], path: Path) -> Path:
    """Counts and row-normalized shares side by side, label names on both axes."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(labels)
    size = min(4 + 0.45 * n, 24)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), dpi=110)
    for ax, data, title, fmt in ((axes[0], counts, "counts", "{:.0f}"), (axes[1], shares, "row-normalized", "{:.2f}")):
        image = ax.imshow(data, cmap="Blues", vmin=0)
        ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        if n <= 30:
            top = data.max() or 1
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if data[i, j] > top / 2 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def reliability(bins: Sequence[dict[str, float]], ece: float, path: Path) -> Path:
    """Accuracy against confidence per bin, with the diagonal of perfect calibration and ECE in the title."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    filled = [b for b in bins if b["count"]]
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in filled], [b["accuracy"] for b in filled],
           width=[b["hi"] - b["lo"] for b in filled], edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([(b["lo"] + b["hi"]) / 2 for b in filled], [b["confidence"] for b in filled], "_", color="tab:red",
            markersize=14, markeredgewidth=2.5, label="mean confidence in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise PtcliError(f"{path}: cannot write the picture ({e.strerror or e})") from None
    finally:
        plt.close(fig)
    return path


CONFUSION, RELIABILITY = "confusion.png", "reliability.png"


def check_directory(directory: Path) -> None:
    """`eval --plots DIR`: DIR may exist (as a directory) or be created in an existing, writable parent."""
    from ptcli.outputs import check_output_dir

    if not available():
        raise PtcliError("--plots needs matplotlib: pip install 'ptcli[plots]'")
    if directory.exists() and not directory.is_dir():
        raise PtcliError(f"{directory}: exists and is not a directory; choose another --plots DIR")
    if not directory.exists():
        check_output_dir(directory, option="--plots DIR")


def report_pictures(report: dict[str, Any], directory: Path) -> list[Path]:
    """The eval report's confusion matrix (when it has one) and reliability diagram as PNG files in `directory`."""
    directory.mkdir(exist_ok=True)
    written = []
    if report.get("confusion") is not None:
        written.append(confusion(report["labels"], report["confusion"], directory / CONFUSION))
    if report.get("reliability"):
        bins = [{**b, "count": b["count"] or 0, "confidence": b.get("confidence") or 0.0,
                 "accuracy": b.get("accuracy") or 0.0} for b in report["reliability"]]
        written.append(reliability(bins, float(report["ece"]), directory / RELIABILITY))
    return written
