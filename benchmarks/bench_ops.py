"""Per-op before/after: each layer's forward and backward at the CIFAR model's real shapes
(batch 128: B*T = 8320 rows, D = 128, MLP 512, 4 heads of 65x65), in one process per source
tree, best of --reps (the minimum is the most load-robust estimate on a shared machine).

    python benchmarks/bench_ops.py --baseline DIR     # DIR: e.g. `git archive` of the old commit
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def best(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts) * 1e3


def measure(B, reps):
    import numpy as np

    from minivit import ViTConfig, init_params, layers
    cfg = ViTConfig.cifar()
    rng = np.random.default_rng(0)
    T, D, M, H = cfg.num_tokens, cfg.dim, cfg.mlp_dim, cfg.heads

    def r(*s):
        return rng.standard_normal(s).astype(np.float32)
    p = {k[len("blocks.0."):]: v for k, v in init_params(cfg, zero_head=False).items()
         if k.startswith("blocks.0.")}
    attn = {k[5:]: v for k, v in p.items() if k.startswith("attn.")}
    mlp = {k[4:]: v for k, v in p.items() if k.startswith("mlp.")}
    x, xm, s = r(B, T, D), r(B, T, M), r(B, H, T, T)
    out = {}
    for name, fw, bw in [
        ("linear fc1", lambda: layers.linear_forward(x, mlp["fc1.weight"], mlp["fc1.bias"]),
         layers.linear_backward),
        ("gelu", lambda: layers.gelu_forward(xm), layers.gelu_backward),
        ("layernorm", lambda: layers.layernorm_forward(x, p["norm1.weight"], p["norm1.bias"]),
         layers.layernorm_backward),
        ("softmax", lambda: (layers.softmax_forward(s), None), None),
        ("attention", lambda: layers.attention_forward(x, attn, H), layers.attention_backward),
        ("mlp", lambda: layers.mlp_forward(x, mlp), layers.mlp_backward),
        ("block", lambda: layers.block_forward(x, p, H), layers.block_backward),
    ]:
        y, cache = fw()
        out[name + " fwd"] = best(fw, reps)
        if bw is not None:
            dy = r(*y.shape)
            out[name + " bwd"] = best(lambda bw=bw, dy=dy, cache=cache: bw(dy, cache), reps)
    A = layers.softmax_forward(s)
    out["softmax bwd"] = best(lambda: layers.softmax_backward(s, A), reps)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--baseline", metavar="DIR")
    ap.add_argument("--worker", metavar="ROOT")
    a = ap.parse_args()
    if a.worker:
        sys.path.insert(0, a.worker)
        print(json.dumps(measure(a.batch, a.reps)))
        return
    roots = {"now": os.path.dirname(HERE)}
    if a.baseline:
        roots["before"] = os.path.abspath(a.baseline)
    res = {}
    for name, root in roots.items():
        cmd = [sys.executable, __file__, "--worker", root, "--batch", str(a.batch),
               "--reps", str(a.reps)]
        res[name] = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                              check=True).stdout.splitlines()[-1])
    names = list(res["now"])
    print(f"| op (batch {a.batch}, float32, best of {a.reps}) | " + " | ".join(
        f"{k} ms" for k in res) + (" | speed-up |" if "before" in res else " |"))
    print("|---" * (len(res) + 1 + ("before" in res)) + "|")
    for n in names:
        cells = [f"{res[k][n]:.1f}" for k in res]
        if "before" in res:
            cells.append(f"{res['before'][n] / res['now'][n]:.1f}x")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
