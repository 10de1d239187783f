"""curves.png: loss and accuracy per epoch, when matplotlib is installed."""


def plot_curves(history, path) -> bool:
    """Plot train/val loss and accuracy from log records; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not history:
        return False
    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], label="train")
    a1.plot(ep, [r["val_loss"] for r in history], label="validation")
    a1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    a2.plot(ep, [r["train_acc"] for r in history], label="train")
    a2.plot(ep, [r["val_acc"] for r in history], label="validation")
    a2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for a in (a1, a2):
        _mark_sizes(a, history)
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _mark_sizes(ax, history):
    """A progressive run (minivit/progressive.py): a dotted line where the training size
    changes, labelled with the new size. Validation runs at the training size, except in the
    last epoch, always at full size (its jump is not marked)."""
    prev = None
    for r in history:
        size = r.get("image_size")
        if size is not None and size != prev:
            ax.axvline(r["epoch"] - 0.5, color="grey", ls=":", lw=1)
            ax.annotate(f"{size} px", (r["epoch"] - 0.5, 1), xycoords=("data", "axes fraction"),
                        xytext=(2, -10), textcoords="offset points", fontsize=8, color="grey")
        prev = size
