"""One benchmark measurement per process: `python workers.py '<json spec>'` prints one JSON line.

Kinds: "minivit" and "torch" time forward and/or a full training step (forward, loss, backward,
AdamW); "gemm" times every matmul of one training step at its real shape with NumPy (the
GEMM-only limit). Each runs in its own process so the two libraries never share one (NumPy slows
by up to ~25% with torch loaded) and OPENBLAS_CORETYPE can differ per process.
"""
import inspect
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cfg_from(spec):
    from minivit import ViTConfig
    return ViTConfig(**spec["cfg"])


def timed(fn, steps, warmup, min_s, sync=lambda: None):
    """Per-call seconds of fn after `warmup` calls: at least `steps` calls or min_s seconds."""
    for _ in range(warmup):
        fn()
    sync()
    times, t_all = [], time.perf_counter()
    while len(times) < steps or (time.perf_counter() - t_all < min_s and len(times) < 10 * steps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times


def adamw_for_minivit(params):
    """minivit.optim's AdamW; the stand-in below only for a --baseline tree older than
    minivit.optim (the core at e8d57ab has none)."""
    try:
        from minivit import optim
        state = optim.adamw_init(params)
        if hasattr(optim, "pack_adamw"):         # as the runner does (CuPy only; in place)
            optim.pack_adamw(params, state)
        return (lambda p, g, lr: optim.adamw_step(p, g, state, lr)), \
            f"minivit.optim ({optim.__file__})"
    except ImportError:
        return standin_adamw(params), "stand-in (benchmarks/workers.py)"


def standin_adamw(params, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05):
    """STAND-IN AdamW (Loshchilov & Hutter), for --baseline trees that predate minivit.optim.
    In place; decay on matrices only (not biases, norms, pos_embed, cls_token)."""
    from minivit.backend import get_array_module
    m = {k: v * 0 for k, v in params.items()}
    v2 = {k: v * 0 for k, v in params.items()}
    t = [0]
    b1, b2 = betas

    def step(p, g, lr):
        t[0] += 1
        c1, c2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
        for k, gk in g.items():
            xp = get_array_module(gk)
            m[k] *= b1
            m[k] += (1 - b1) * gk
            v2[k] *= b2
            v2[k] += (1 - b2) * gk * gk
            if p[k].ndim >= 2 and k not in ("pos_embed", "cls_token"):
                p[k] *= 1 - lr * weight_decay
            p[k] -= (lr / c1) * m[k] / (xp.sqrt(v2[k] / c2) + eps)
    return step


def run_minivit(spec):
    import numpy as np

    from minivit import backend, cross_entropy, init_params, vit_backward, vit_forward
    if spec["backend"] == "cupy":
        backend.use("cupy")
    if spec.get("chunk_kib"):                      # --chunk-kib: this chunk, threads or not
        from minivit import parallel
        parallel.CHUNK_BYTES, parallel.GIL_FACTOR = spec["chunk_kib"] * 1024, 1
    if spec.get("precision") == "tf32":
        from minivit.precision import enable_tf32
        enable_tf32()                                # before the first float32 matmul
    xp, cfg, B = backend.xp(), cfg_from(spec), spec["batch"]
    params = init_params(cfg, seed=0, dtype=spec["dtype"], zero_head=False)
    rng = np.random.default_rng(0)
    images = backend.to_device(rng.standard_normal((B, cfg.in_channels, *cfg.hw)), spec["dtype"])
    labels = backend.to_device(rng.integers(0, cfg.num_classes, B))
    opt, opt_name = adamw_for_minivit(params)
    ws = make_workspace(spec)
    kw = {"workspace": ws} if ws is not None else {}
    if "all_tokens" in inspect.signature(vit_forward).parameters:   # not in a --baseline tree
        kw["all_tokens"] = spec.get("all_tokens", False)
    sync = (lambda: xp.cuda.Device().synchronize()) if spec["backend"] == "cupy" else (lambda: 0)
    base = peak_rss_mib()

    def train_step():
        logits, cache = vit_forward(params, images, cfg, train=True, **kw)
        _, dlogits = cross_entropy(logits, labels)
        _, grads = vit_backward(dlogits, cache, **({"input_grad": False} if ws is not None else {}))
        opt(params, grads, 1e-4)

    def forward():
        vit_forward(params, images, cfg, train=False, **kw)
    if ws is not None and not kw.get("all_tokens", True):
        train_step, forward = data_parallel_steps(params, images, labels, cfg, ws, opt) or \
            (train_step, forward)
    if spec.get("precision", "fp32") == "fp16":
        train_step, forward = mixed_precision_steps(params, images, labels, cfg, ws)
        opt_name = "minivit.optim (through minivit.train.train_step, fp16 + loss scaling)"
    out = {"optimizer": opt_name, "rss_after_setup_mib": base}
    out.update(measure(spec, train_step, forward, sync))
    if spec["backend"] == "cupy":
        out["device_pool_mib"] = xp.get_default_memory_pool().total_bytes() / 2**20
    return out


def data_parallel_steps(params, images, labels, cfg, ws, opt):
    """The step as minivit.train.train_step runs it (no clipping or label smoothing, like the
    PyTorch step): one share of the batch per thread (minivit.data_parallel) inside
    owned_threads(); the forward as evaluation runs it. None for a tree without them."""
    import minivit
    try:
        from minivit import blas, data_parallel
        from minivit.blas import owned_threads
        from minivit.models import get_model
    except ImportError:
        return None
    tree = os.path.dirname(minivit.__file__)
    if any(os.path.dirname(m.__file__) != tree for m in (blas, data_parallel)):
        return None          # a --baseline tree without them (the editable install's found)
    vit = get_model("vit")

    def train_step():
        with owned_threads():
            _, _, grads = data_parallel.forward_backward(vit, params, images, labels, cfg,
                                                         workspace=ws)
            opt(params, grads, 1e-4)

    def forward():
        with owned_threads():
            data_parallel.forward(vit, params, images, cfg, workspace=ws)
    return train_step, forward


def mixed_precision_steps(params, images, labels, cfg, ws):
    """--precision fp16: minivit.train.train_step with its loss scale (no clipping, no label
    smoothing, like the fp32 step above), and a forward on float16 copies."""
    from minivit import vit_forward
    from minivit.optim import adamw_init
    from minivit.precision import half_copy, new_loss_scale
    from minivit.recipes import TrainConfig
    from minivit.train import train_step as minivit_train_step
    tc = TrainConfig(precision="fp16", clip_norm=0.0, label_smoothing=0.0)
    state, ls = adamw_init(params), new_loss_scale("fp16")
    p16, x16 = half_copy(params), images.astype("float16")

    def train_step():
        minivit_train_step(params, state, images, labels, cfg, tc, 1e-4, None, workspace=ws,
                           loss_scale=ls)

    def forward():                                   # inference on float16 weights cast once
        vit_forward(p16, x16, cfg, train=False, workspace=ws, all_tokens=False)  # as training
    return train_step, forward


def make_workspace(spec):
    if not spec.get("workspace", True):
        return None
    try:
        from minivit.workspace import Workspace
    except ImportError:
        return None
    return Workspace()


def measure(spec, train_step, forward, sync):
    out = {}
    for mode, fn in (("train", train_step), ("forward", forward)):
        if mode in spec["modes"]:
            t = timed(fn, spec["steps"], spec["warmup"], spec["min_s"], sync)
            out[mode + "_s"] = t
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run_torch(spec):
    import numpy as np
    import torch
    from torch_vit import TorchViT
    cfg, B = cfg_from(spec), spec["batch"]
    dev = "cuda" if spec["backend"] == "cupy" else "cpu"
    dtype = getattr(torch, spec["dtype"])
    torch.manual_seed(0)
    model = TorchViT(cfg).to(dev, dtype)
    rng = np.random.default_rng(0)
    images = torch.tensor(rng.standard_normal((B, cfg.in_channels, *cfg.hw)), dtype=dtype,
                          device=dev)
    labels = torch.tensor(rng.integers(0, cfg.num_classes, B), device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    fmodel = model
    if spec.get("compile"):
        fmodel = torch.compile(model)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: 0)
    base = peak_rss_mib()
    precision = spec.get("precision", "fp32")
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    amp = precision == "fp16"                       # autocast float16 + GradScaler
    scaler = torch.amp.GradScaler(dev, enabled=amp)

    def train_step():
        with torch.autocast(dev, dtype=torch.float16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(fmodel(images), labels)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    def forward():
        with torch.no_grad(), torch.autocast(dev, dtype=torch.float16, enabled=amp):
            fmodel(images)
    out = {"threads": torch.get_num_threads(), "rss_after_setup_mib": base}
    out.update(measure(spec, train_step, forward, sync))
    if dev == "cuda":
        out["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def gemm_shapes(cfg, B, all_tokens=True):
    """(count, batch, M, K, N, transA, transB, phase) of every matmul of one training step as
    minivit calls it; the attention products are (B*heads)-batched. all_tokens=False: the last
    block computes its output for the class token alone (Tq = 1 query row per image)."""
    T, N, D, M, H = cfg.num_tokens, cfg.num_patches, cfg.dim, cfg.mlp_dim, cfg.heads
    Dh, L, K, R = D // H, cfg.depth, cfg.num_classes, B * cfg.num_tokens
    full = L if all_tokens else L - 1                 # blocks run for every token
    lin = [(B * N, cfg.patch_dim, D, 1), (B, D, K, 1), (R, D, 3 * D, L)]
    lin += [(R, D, D, full), (R, D, M, full), (R, M, D, full)]
    if not all_tokens:
        lin += [(B, D, D, 1), (B, D, M, 1), (B, M, D, 1)]             # proj, fc1, fc2 of z_L^0
    out = []
    for m, k, n, c in lin:
        out.append((c, 1, m, k, n, False, False, "fwd"))                  # y = x W
        out.append((c, 1, m, n, k, False, True, "bwd"))                   # dx = dy W^T
        out.append((c, 1, k, m, n, True, False, "bwd"))                   # dW = x^T dy
    bh = B * H
    for c, tq in ((full, T), (L - full, 1)):
        if c:
            out += [(c, bh, tq, Dh, T, False, True, "fwd"),              # q k^T
                    (c, bh, tq, T, Dh, False, False, "fwd"),             # A v
                    (c, bh, tq, Dh, T, False, True, "bwd"),              # dA = dctx v^T
                    (c, bh, T, tq, Dh, True, False, "bwd"),              # dv = A^T dctx
                    (c, bh, tq, T, Dh, False, False, "bwd"),             # dq = dS k
                    (c, bh, T, tq, Dh, True, False, "bwd")]              # dk = dS^T q
    return out


def run_gemm(spec):
    """Sum of the measured time of every matmul (NumPy, the given dtype) of one step."""
    import numpy as np
    cfg, B = cfg_from(spec), spec["batch"]
    rng = np.random.default_rng(0)
    tot = {"fwd": 0.0, "bwd": 0.0, "attn": 0.0}
    flops = {"fwd": 0.0, "bwd": 0.0}
    for count, batch, m, k, n, ta, tb, phase in gemm_shapes(cfg, B, spec.get("all_tokens", False)):
        def mat(r, c, t, batch=batch):
            a = rng.standard_normal((batch, c, r) if t else (batch, r, c)).astype(spec["dtype"])
            return a.swapaxes(-1, -2) if t else a
        a, b = mat(m, k, ta), mat(k, n, tb)
        a, b = (a[0], b[0]) if batch == 1 else (a, b)
        c = np.empty(a.shape[:-1] + (n,), spec["dtype"])
        t = timed(lambda a=a, b=b, c=c: np.matmul(a, b, out=c), 5, 2, 0.2)
        dt = min(t) * count                     # a limit: the best time is the least noisy
        tot[phase] += dt
        tot["attn"] += dt if batch > 1 else 0.0
        flops[phase] += 2.0 * batch * m * k * n * count
    return {"gemm_fwd_s": tot["fwd"], "gemm_train_s": tot["fwd"] + tot["bwd"],
            "gemm_attn_s": tot["attn"], "flop_fwd": flops["fwd"],
            "flop_train": flops["fwd"] + flops["bwd"], "batch": B, "peak_rss_mib": peak_rss_mib()}


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    if spec.get("root"):                    # another minivit source tree (--baseline)
        sys.path.insert(0, spec["root"])
    fn = {"minivit": run_minivit, "torch": run_torch, "gemm": run_gemm}[spec["kind"]]
    res = fn(spec)
    res["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    print(json.dumps(res))
