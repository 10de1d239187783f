"""The figures, drawn with matplotlib (an optional extra: pip install 'minivit[plot]').

Each function takes host arrays from the analysis tools and writes one PNG."""
import numpy as np


def require_matplotlib():
    """matplotlib.pyplot on the non-interactive Agg backend, or a clear error."""
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("the figures need matplotlib, an optional extra: "
                           "pip install 'minivit[plot]' (or pip install matplotlib)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def to_display(image):
    """(C, H, W) image, normalised or not -> (H, W, C) in [0, 1] by its own min and max."""
    img = np.asarray(image, dtype=np.float64).transpose(1, 2, 0)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img[..., 0] if img.shape[-1] == 1 else img


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt
    plt.close(fig)


def plot_rollout(images, maps, path, titles=None):
    """Each image above its attention-rollout map overlaid (Fig. 6): images (B, C, H, W),
    maps (B, h, w) from rollout_map."""
    plt = require_matplotlib()
    B = len(images)
    fig, axes = plt.subplots(2, B, figsize=(1.8 * B, 3.8), squeeze=False)
    for b in range(B):
        img = to_display(images[b])
        H, W = img.shape[:2]
        m = maps[b] / maps[b].max()
        axes[0, b].imshow(img)
        axes[1, b].imshow(img)
        axes[1, b].imshow(m, cmap="inferno", alpha=0.6, extent=(-0.5, W - 0.5, H - 0.5, -0.5),
                          interpolation="bilinear")
        if titles is not None:
            axes[0, b].set_title(str(titles[b]), fontsize=8)
        for ax in axes[:, b]:
            ax.axis("off")
    fig.suptitle("input / attention rollout (class token)", fontsize=9)
    _save(fig, path)


def plot_attention_distance(dist, path, image_size=None):
    """One dot per head against depth (Fig. 7, right). dist (L, heads) in pixels."""
    plt = require_matplotlib()
    L, H = dist.shape
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for h in range(H):
        ax.scatter(np.arange(1, L + 1), dist[:, h], s=14, label=f"head {h + 1}")
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    if image_size is not None:
        ax.set_ylim(0, image_size)
    ax.set_xticks(np.arange(1, L + 1))
    if H <= 16:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    _save(fig, path)


def plot_pos_similarity(sim, path):
    """The (h, w) grid of (h, w) cosine-similarity tiles (Fig. 7, centre) as one mosaic."""
    plt = require_matplotlib()
    h, w = sim.shape[:2]
    mosaic = np.full((h * (h + 1) - 1, w * (w + 1) - 1), np.nan)
    for i in range(h):
        for j in range(w):
            mosaic[i * (h + 1):i * (h + 1) + h, j * (w + 1):j * (w + 1) + w] = sim[i, j]
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    im = ax.imshow(mosaic, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([j * (w + 1) + w / 2 - 0.5 for j in range(w)], range(1, w + 1))
    ax.set_yticks([i * (h + 1) + h / 2 - 0.5 for i in range(h)], range(1, h + 1))
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.tick_params(length=0, labelsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046, label="cosine similarity")
    ax.set_title("position embedding similarity", fontsize=9)
    _save(fig, path)


def plot_filters(components, ratio, path, cols=7):
    """The principal components of E as P x P (x C) images (Fig. 7, left)."""
    plt = require_matplotlib()
    n = len(components)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (c, r) in enumerate(zip(components, ratio, strict=True)):
        ax = axes.ravel()[i]
        ax.imshow(to_display(c.transpose(2, 0, 1)), interpolation="nearest",
                  cmap="gray" if c.shape[-1] == 1 else None)
        ax.set_title(f"{100 * r:.1f}%", fontsize=6)
    fig.suptitle("RGB embedding filters (first principal components)", fontsize=9)
    _save(fig, path)
