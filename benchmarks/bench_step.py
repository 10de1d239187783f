"""minivit vs the plain PyTorch ViT (tests/torch_vit.py): forward and training-step img/s.

Each measurement runs in its own process (benchmarks/workers.py), minivit and PyTorch
alternated round by round; img/s is the median step time over all timed steps of all rounds.
The GEMM-only limit is the summed time of every matmul of one step at its real shape (NumPy).

    python benchmarks/bench_step.py                         # CIFAR model, batch 128, CPU
    python benchmarks/bench_step.py --coretype both --compile
    python benchmarks/bench_step.py --scaling               # img/s, RSS vs batch and tokens
    python benchmarks/bench_step.py --smoke                 # seconds; what CI runs
OPENBLAS_CORETYPE: "asis" keeps the environment, "unset" removes it for the child processes,
"both" reports both. minivit itself never touches the variable.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_worker(spec, coretype):
    env = dict(os.environ)
    if coretype == "unset":
        env.pop("OPENBLAS_CORETYPE", None)
    r = subprocess.run([sys.executable, os.path.join(HERE, "workers.py"), json.dumps(spec)],
                       env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout).strip().splitlines()[-1:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def torch_available():
    try:
        import importlib.util
        return importlib.util.find_spec("torch") is not None
    except ValueError:
        return False


def median_ips(results, key, batch):
    times = [t for r in results for t in r.get(key, [])]
    return batch / statistics.median(times) if times else float("nan")


def compare(args, cfg, batch, coretype, kinds, modes):
    """Alternate the kinds for args.repeats rounds; returns {kind: [results]} and the gemm run."""
    base = {"cfg": cfg, "batch": batch, "backend": args.backend, "dtype": args.dtype,
            "modes": modes, "steps": args.steps, "warmup": args.warmup, "min_s": args.min_s,
            "workspace": not args.no_workspace, "precision": args.precision,
            "all_tokens": args.all_tokens, "chunk_kib": args.chunk_kib}
    runs = {k: [] for k in kinds}
    for r in range(args.repeats):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for k in order:
            spec = dict(base, kind=k.split("@")[0].replace("-compile", ""),
                        compile=k.endswith("-compile"))
            if k == "minivit@baseline":
                spec["root"] = os.path.abspath(args.baseline)
            runs[k].append(run_worker(spec, coretype))
            if "error" in runs[k][-1]:
                print(f"  [{k}] failed: {runs[k][-1]['error']}", file=sys.stderr)
    gemm = run_worker(dict(base, kind="gemm"), coretype) if args.backend == "numpy" else {}
    return runs, gemm


def summarize(runs, gemm, batch, modes):
    rows = {}
    for k, res in runs.items():
        ok = [r for r in res if "error" not in r]
        row = {m: median_ips(ok, m + "_s", batch) for m in modes}
        row["rss"] = max((r["peak_rss_mib"] for r in ok), default=float("nan"))
        row["dev"] = max((r.get("device_peak_mib", r.get("device_pool_mib", 0)) for r in ok),
                         default=0)
        row["optimizer"] = next((r.get("optimizer") for r in ok if "optimizer" in r), "")
        rows[k] = row
    lim = {"train": batch / gemm["gemm_train_s"], "forward": batch / gemm["gemm_fwd_s"]} \
        if "gemm_train_s" in gemm else {}
    return rows, lim


def print_table(title, rows, lim, modes, gemm):
    print(f"\n### {title}\n")
    print("| run | " + " | ".join(f"{m} img/s" for m in modes)
          + " | " + " | ".join(f"{m} / torch" for m in modes)
          + " | " + " | ".join(f"{m} / GEMM limit" for m in modes) + " | peak RSS MiB |")
    print("|---" * (1 + 3 * len(modes) + 1) + "|")
    ref = rows.get("torch", {})
    for k, row in rows.items():
        cells = [f"{row[m]:.1f}" for m in modes]
        cells += [f"{row[m] / ref[m]:.2f}x" if ref else "-" for m in modes]
        cells += [f"{row[m] / lim[m]:.0%}" if lim else "-" for m in modes]
        mem = f"{row['rss']:.0f}" + (f" (dev {row['dev']:.0f})" if row["dev"] else "")
        print(f"| {k} | " + " | ".join(cells) + f" | {mem} |")
    if lim:
        print("| GEMM-only limit | " + " | ".join(f"{lim[m]:.1f}" for m in modes)
              + " |" + " - |" * (2 * len(modes) + 1))
        fl = gemm["flop_train"] / gemm["batch"] / 1e6
        print(f"\nmatmul FLOP per image per training step: {fl:.0f} M; batched attention "
              f"matmuls are {gemm['gemm_attn_s'] / gemm['gemm_train_s']:.0%} of GEMM time")
    opt = {r["optimizer"] for r in rows.values() if r["optimizer"]}
    if opt:
        print(f"minivit AdamW: {', '.join(opt)}")


def cfg_dict(args, patch=None):
    return {"image_size": args.image, "patch_size": patch or args.patch, "dim": args.dim,
            "depth": args.depth, "heads": args.heads, "mlp_dim": args.mlp, "num_classes": 10}


def scaling(args, coretype):
    mem, unit = ("dev", "device MiB") if args.backend == "cupy" else ("rss", "RSS MiB")
    print(f"\n### Scaling (training step, {args.backend}, {args.precision}, OPENBLAS_CORETYPE "
          f"{coretype})\n")
    print(f"| batch | P | tokens | minivit img/s | torch img/s | ratio | minivit {unit} "
          f"| torch {unit} |\n|---|---|---|---|---|---|---|---|")
    kinds = ["minivit"] + (["torch"] if not (args.no_torch or args.smoke) else [])
    cells = [(b, args.patch) for b in args.batches] + [(args.batch, p) for p in args.patches
                                                       if p != args.patch]
    for b, p in cells:
        cfg = cfg_dict(args, p)
        runs, _ = compare(args, cfg, b, coretype, kinds, ["train"])
        rows, _ = summarize(runs, {}, b, ["train"])
        m, t = rows["minivit"], rows.get("torch", {"train": float("nan"), mem: float("nan")})
        T = (args.image // p) ** 2 + 1
        print(f"| {b} | {p} | {T} | {m['train']:.1f} | {t['train']:.1f} | "
              f"{m['train'] / t['train']:.2f}x | {m[mem]:.0f} | {t[mem]:.0f} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--precision", choices=["fp32", "tf32", "fp16"], default="fp32",
                    help="tf32: TF32 matmuls (GPU); fp16: minivit's mixed precision against "
                         "torch.autocast(float16) + GradScaler")
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of alternated processes")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per process (at least)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-s", type=float, default=0.0, help="time each process at least this")
    ap.add_argument("--modes", default="train,forward")
    ap.add_argument("--coretype", choices=["asis", "unset", "both"], default="asis")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (forward)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-workspace", action="store_true", help="minivit without a Workspace")
    ap.add_argument("--all-tokens", action="store_true",
                    help="minivit's last block computes every token, as the PyTorch model does "
                         "(default: the class token alone, as training runs it; the GEMM-only "
                         "limit counts the same matmuls minivit runs)")
    ap.add_argument("--baseline", metavar="DIR", help="also time the minivit in source tree DIR "
                    "(e.g. a `git archive` of an older commit), alternated with the others")
    ap.add_argument("--chunk-kib", type=int, default=0, metavar="N",
                    help="minivit's elementwise chunks exactly N KiB per array, threads or not "
                         "(default: minivit.parallel's choice)")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--batches", default="32,64,128,256,512")
    ap.add_argument("--patches", default="8,4,2")
    ap.add_argument("--smoke", action="store_true", help="tiny model, one short round (CI)")
    args = ap.parse_args(argv)
    if args.all_tokens and args.precision == "fp16":
        ap.error("--all-tokens does not apply to --precision fp16: that step runs through "
                 "minivit.train.train_step, which computes the class token alone")
    args.batches = [int(x) for x in args.batches.split(",")]
    args.patches = [int(x) for x in args.patches.split(",")]
    if args.smoke:
        args.batch, args.image, args.patch, args.dim, args.depth = 4, 8, 4, 16, 1
        args.heads, args.mlp, args.repeats, args.steps, args.warmup = 2, 32, 1, 2, 1
        args.batches, args.patches = [2], [4]
    if not torch_available():
        args.no_torch = True
    modes = args.modes.split(",")
    print(f"# bench_step {time.strftime('%Y-%m-%d %H:%M %Z')} on {cpu_name()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}")
    print("command: python benchmarks/bench_step.py " + " ".join(sys.argv[1:] if argv is None
                                                                    else argv))
    for coretype in (["asis", "unset"] if args.coretype == "both" else [args.coretype]):
        label = os.environ.get("OPENBLAS_CORETYPE", "(unset)") if coretype == "asis" else "(unset)"
        if args.scaling or args.smoke:
            scaling(args, label if coretype == "asis" else "unset")
            if not args.smoke:
                continue
        kinds = ["minivit"] + (["minivit@baseline"] if args.baseline else [])
        kinds += [] if args.no_torch else ["torch"]
        kinds += ["torch-compile"] if args.compile and not args.no_torch else []
        runs, gemm = compare(args, cfg_dict(args), args.batch, coretype, kinds, modes)
        rows, lim = summarize(runs, gemm, args.batch, modes)
        print_table(f"batch {args.batch}, {args.dtype} ({args.precision}), {args.backend}, "
                    f"OPENBLAS_CORETYPE={label}, minivit's last block: "
                    f"{'every token' if args.all_tokens else 'class token only'}",
                    rows, lim, modes, gemm)
    return 0


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
