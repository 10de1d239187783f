"""Progressive resizing: the first epochs on downscaled images, the last ones at full size.

A ViT's cost grows with its token count T = 1 + (H/P)(W/P): at 16 px the P = 4 CIFAR model has
T = 17 tokens instead of 65, and a training step costs about a quarter. Training first on small
images and then on full-size ones (FixRes, Touvron et al. 2019; EfficientNet-V2's progressive
learning, Tan & Le 2021) buys more epochs for the same time.

The parameters are always those of the full-size model. E does not depend on the image size;
at a smaller size the patch rows G (h, w, D) of E_pos are area-averaged onto the smaller grid
(a small patch covers several full-size ones and gets the mean of their embeddings), the class
token's row kept:
    E_pos' = [E_pos[cls] ; M_h G M_w^T]            M (h', h) averaging, rows summing to 1
a linear map, so its gradient is the adjoint:  dG = M_h^T dG' M_w.
Images are shrunk with the same area averaging (32 -> 16 px: the mean of each 2 x 2 block).

A schedule is a tuple of (size, epochs) pairs, e.g. ((16, 6), (32, 10)): 6 epochs at 16 px, then
10 at 32 px. Only the plain ViT with learned 1-D (or no) position embeddings is supported.
"""
from .backend import get_array_module
from .transfer.resize import device_matrix, resize_images, resize_pos_embed


def supports(arch, pos_embed):
    """Whether a model can train on a schedule: the plain ViT, E_pos learned 1-D or none."""
    return arch == "vit" and pos_embed in ("1d", "none")


def check_schedule(schedule, cfg, arch="vit"):
    """Raise ValueError unless every size of schedule fits cfg (TrainConfig checks that the
    epochs add up)."""
    if not schedule:
        return
    if not supports(arch, getattr(cfg, "pos_embed", None)) or cfg.hw[0] != cfg.hw[1]:
        raise ValueError("a resolution schedule needs the plain ViT (--model vit) with square "
                         "images and --pos-embed 1d or none, got " + (arch if arch != "vit" else
                         f"pos_embed {cfg.pos_embed!r} at {cfg.hw[0]}x{cfg.hw[1]}"))
    H = cfg.hw[0]
    for size, n in schedule:
        if not (0 < size <= H and size % cfg.patch_size == 0) or n < 1:
            raise ValueError(f"schedule entry {size}:{n}: each size must be a multiple of the "
                             f"patch size {cfg.patch_size} up to {H}, for 1 or more epochs")


def size_at(schedule, epoch):
    """The image size of (0-based) epoch under schedule; None without one (the model's own)."""
    end = 0
    for size, n in schedule:
        end += n
        if epoch < end:
            return size
    return None


def shrink_images(x, size):
    """(B, C, H, W) -> (B, C, size, size), area-averaged:  x' = M_h x M_w^T per image."""
    return resize_images(x, (size, size), "area")


def at_resolution(params, cfg, size):
    """(params', cfg', pull_back) to run cfg's model on size x size images. pull_back maps the
    gradients of params' to those of params (only E_pos differs). Identity at full size."""
    if size == cfg.hw[0]:
        return params, cfg, lambda grads: grads
    small = cfg.replace(image_size=size)
    if cfg.pos_embed == "none":
        return params, small, lambda grads: grads
    (h, w), (h2, w2), prefix = cfg.grid, small.grid, int(cfg.pool == "cls")
    pos = params["pos_embed"]                                          # (1, prefix + h w, D)
    xp, D = get_array_module(pos), pos.shape[-1]
    out = {**params, "pos_embed": resize_pos_embed(pos, (h, w), (h2, w2), prefix, "area")}
    Mh, Mw = (device_matrix(xp, n, n2, "area", pos.dtype) for n, n2 in ((h, h2), (w, w2)))

    def pull_back(grads):
        g = grads["pos_embed"]                                          # (1, prefix + h' w', D)
        dgrid = xp.einsum("ah,abd,bw->hwd", Mh, g[0, prefix:].reshape(h2, w2, D), Mw)
        full = xp.concatenate([g[:, :prefix], dgrid.reshape(1, h * w, D)], axis=1)
        return {**grads, "pos_embed": full}

    return out, small, pull_back
