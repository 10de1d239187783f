"""Where a minivit training step spends its time on CuPy: phases and layer functions.

    python benchmarks/profile_gpu.py [--batch 512] [--steps 20] [--recipe full]

1. The step as the runner runs it (the recipe's augmentation, train_step, its one host read).
2. Forward, backward, clip and AdamW unsynchronized: host time to issue them against the time
   until the device is done. When the two are close, the step is bound by the host launching
   kernels, not by the GPU. Then the cost of one tiny kernel, and CuPy's reductions against
   minivit's at the step's shapes.
3. Each function's inclusive time (train_step, the augmentation, every layer; a synchronize
   before and after every call, so launch overhead shows up where it is spent), per step, with
   its calls per step. Synchronizing changes what it measures (no overlap of host and device);
   read it as a split.
"""
import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FUNCS = ["linear_forward", "linear_backward", "gelu_forward", "gelu_backward",
         "layernorm_forward", "layernorm_backward", "softmax_forward", "softmax_backward",
         "attention_forward", "attention_backward", "mlp_forward", "mlp_backward",
         "block_forward", "block_backward", "patch_embed_forward", "patch_embed_backward",
         "embed_tokens_forward", "embed_tokens_backward", "head_forward", "head_backward",
         "drop_path_forward", "cross_entropy", "global_norm", "clip_grad_norm", "adamw_step",
         "train_batch", "rand_augment", "mix_batch", "random_erasing", "random_crop",
         "vit_forward", "vit_backward", "clip_scale", "colour_ops", "equalize", "smooth",
         "autocontrast", "affine_sample", "draw", "augment_images", "mix_normalize_erase"]


def wrap_all(names, sync, totals, counts):
    """Replace every minivit module's reference to each named function by a synced timer
    (one wrapper per function object, so a name shared by two functions keeps both)."""
    wrappers = {}

    def make(fn, name):
        def timed(*a, **k):
            sync()
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sync()
                totals[name] += time.perf_counter() - t
                counts[name] += 1
        return timed

    for mod in [m for k, m in list(sys.modules.items()) if k.startswith("minivit") and m]:
        for name in names:
            fn = getattr(mod, name, None)
            if callable(fn):
                setattr(mod, name, wrappers.setdefault(id(fn), make(fn, name)))


def issue_vs_done(params, opt, x_u8, y, cfg, tc, ws, a, sync):
    """Host time to issue forward/backward/clip/AdamW (no host read) vs time to finish them."""
    import cupy

    from minivit.data.loader import train_batch
    from minivit.models import get_model
    from minivit.optim import adamw_step
    from minivit.train import _forward_backward, derived_rng
    spec = get_model("vit")
    x, t = train_batch(x_u8[:a.batch], y[:a.batch], derived_rng(0, 1, 0), tc.augment, 10)
    for n in (3, a.steps):                                  # warm-up, then timed
        sync()
        t0 = time.perf_counter()
        for s in range(n):
            _, _, grads = _forward_backward(spec, params, x, t, cfg, tc, derived_rng(0, 2, s),
                                            None, ws, None)
            adamw_step(params, grads, opt, 1e-3, weight_decay=0.05, clip_norm=1.0)
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
    print(f"forward+backward+clip+AdamW as train_step runs them, no host read: host issues "
          f"a step in "
          f"{(t1 - t0) / n * 1e3:.2f} ms, the device is done after {(t2 - t0) / n * 1e3:.2f} ms")
    z = cupy.zeros(16, "float32")
    sync()
    t0 = time.perf_counter()
    for _ in range(2000):
        z += 1
    sync()
    print(f"one tiny elementwise kernel (z += 1): {(time.perf_counter() - t0) / 2000 * 1e6:.1f} us")


def reductions(batch, sync):
    """CuPy's sum over axis 0 against minivit's GEMV column sums, and the gradient norm's
    per-array reductions against one kernel, at the training step's shapes."""
    import cupy

    from minivit import kernels_cupy, parallel

    def per_call(fn, n=50):
        fn()
        sync()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - t) / n * 1e6
    print("\n| reduction (float32) | CuPy's own, us | minivit's, us |\n|---|---:|---:|")
    for n in (128, 384, 512):
        a = cupy.random.standard_normal((batch * 65, n), dtype="float32")
        print(f"| column sums of ({batch * 65}, {n}) | "
              f"{per_call(lambda a=a: a.sum(axis=0)):.1f} | "
              f"{per_call(lambda a=a: parallel.col_sums(a)):.1f} |")
    from minivit import ViTConfig, init_params
    gs = list(init_params(ViTConfig.cifar(), dtype="float32").values())
    gs = [cupy.asarray(g) for g in gs]
    old = lambda: cupy.sqrt(sum((g.astype(cupy.float64) ** 2).sum() for g in gs))  # noqa: E731
    print(f"| squared norm of the {len(gs)} gradients | {per_call(old):.1f} | "
          f"{per_call(lambda: kernels_cupy.sum_of_squares(gs)):.1f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--recipe", default="full")
    a = ap.parse_args()
    import cupy
    import numpy as np

    from minivit import ViTConfig, backend
    from minivit import train as train_mod
    from minivit.data import loader
    from minivit.optim import adamw_init, pack_adamw
    from minivit.recipes import recipe
    from minivit.train import build_model, derived_rng
    from minivit.workspace import Workspace
    backend.use("cupy")
    overrides, tc = recipe(a.recipe, batch_size=a.batch)
    cfg = ViTConfig.cifar(**overrides)
    params = build_model(cfg, 0, "float32")
    opt = adamw_init(params)
    pack_adamw(params, opt)                                 # as the runner does
    ws = Workspace()
    rs = np.random.default_rng(0)
    x_u8 = cupy.asarray(rs.integers(0, 256, (4096, 3, 32, 32), dtype=np.uint8))
    y = cupy.asarray(rs.integers(0, 10, 4096))
    sync = cupy.cuda.Device().synchronize

    def step(s):                     # through the modules: the timed wrappers, once in place
        rng = derived_rng(0, 1, s)
        i = (s * a.batch) % (4096 - a.batch)
        x, t = loader.train_batch(x_u8[i:i + a.batch], y[i:i + a.batch], rng, tc.augment, 10)
        return train_mod.train_step(params, opt, x, t, cfg, tc, 1e-3, rng, workspace=ws)

    for s in range(3):
        step(s)
    sync()
    t0 = time.perf_counter()
    for s in range(a.steps):
        step(s)
    sync()
    plain = (time.perf_counter() - t0) / a.steps
    print(f"# profile_gpu: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, "
          f"recipe {a.recipe}, batch {a.batch}, cupy {cupy.__version__}")
    print(f"step as the runner runs it (one host read per step): {plain * 1e3:.2f} ms "
          f"= {a.batch / plain:.0f} img/s")
    issue_vs_done(params, opt, x_u8, y, cfg, tc, ws, a, sync)
    reductions(a.batch, sync)
    totals, counts = collections.Counter(), collections.Counter()
    wrap_all(FUNCS + ["train_step"], sync, totals, counts)
    for s in range(a.steps):
        step(s)
    print("\n| function (inclusive, synced) | ms / step | calls / step |\n|---|---:|---:|")
    for name, tot in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {tot / a.steps * 1e3:.2f} | {counts[name] / a.steps:g} |")


if __name__ == "__main__":
    main()
