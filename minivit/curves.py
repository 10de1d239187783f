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
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
