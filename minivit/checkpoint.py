"""Checkpoints as plain .npz files: params, optimiser state and a JSON header, no pickle.

Layout: "params/<name>", "opt/<slot>/<name>" arrays (host NumPy) and "meta", a 0-d unicode
array holding JSON: format version, model config, training config, epoch, step within the
epoch, the optimiser's step, the RNG position and the log so far. Written to a temp file in the
same folder and renamed, so a crash never leaves a half-written checkpoint; read with
allow_pickle=False.
"""
import json
import os
import zipfile

import numpy as np

from .backend import to_numpy

FORMAT_VERSION = 1


class CheckpointMismatch(ValueError):
    """The checkpoint was made with another config than the one asked for."""


def save_checkpoint(path, params, opt_state, meta: dict, state=None):
    """Atomically write params, opt_state ({"step": int, slot: {name: array}}) and meta, and
    the model's buffers `state` (BatchNorm running statistics) as "state/<name>"."""
    arrays = {f"params/{k}": to_numpy(v) for k, v in params.items()}
    arrays.update({f"state/{k}": to_numpy(v) for k, v in (state or {}).items()})
    for slot, d in opt_state.items():
        if isinstance(d, dict):
            arrays.update({f"opt/{slot}/{k}": to_numpy(v) for k, v in d.items()})
    header = {**meta, "format_version": FORMAT_VERSION, "opt_step": int(opt_state["step"])}
    arrays["meta"] = np.array(json.dumps(header))
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, model_config: dict | None = None):
    """-> (params, opt_state, meta) as host arrays. With model_config, a checkpoint made with
    another one raises CheckpointMismatch naming the differences."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            params, opt = {}, {"step": meta.get("opt_step", 0)}
            for key in z.files:
                kind, _, rest = key.partition("/")
                if kind == "params":
                    params[rest] = z[key]
                elif kind == "opt":
                    slot, _, name = rest.partition("/")
                    opt.setdefault(slot, {})[name] = z[key]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # cut short too
        why = ("it holds object (pickled) arrays, which minivit never loads"
               if "Object arrays" in str(e) else
               "not an .npz archive (minivit never loads pickles)" if "pickle" in str(e) else
               "an .npz without minivit's meta record" if isinstance(e, KeyError) else e)
        raise ValueError(f"{path} is not a readable minivit checkpoint: {why}") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {meta.get('format_version')}, "
                         f"this minivit reads format {FORMAT_VERSION}")
    if model_config is not None:
        check_same(with_defaults(meta), model_config, f"checkpoint {path}")
    return params, opt, meta


def with_defaults(meta) -> dict:
    """The saved model config as its config class reads it: a field added to the class after
    the checkpoint was written takes its default (what the older code did), so old runs resume."""
    from .models import get_model
    cfg = get_model(meta.get("arch", "vit")).from_dict(meta["model"])
    return json.loads(json.dumps(cfg.to_dict()))


def load_state(path) -> dict:
    """The model buffers (BatchNorm running statistics) saved with a checkpoint; {} if none."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k[len("state/"):]: z[k] for k in z.files if k.startswith("state/")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable minivit checkpoint: {e}") from e


def config_diff(saved: dict, wanted: dict) -> list:
    """['dim: 64 (saved) vs 128 (here)', ...] for every key whose value differs."""
    keys = sorted(set(saved) | set(wanted))
    return [f"{k}: {saved.get(k, '<unset>')!r} (saved) vs {wanted.get(k, '<unset>')!r} (here)"
            for k in keys if saved.get(k) != wanted.get(k)]


def check_same(saved: dict, wanted: dict, what: str):
    diff = config_diff(saved, wanted)
    if diff:
        raise CheckpointMismatch(f"{what} was made with another config: " + "; ".join(diff))


def run_backend(run_dir):
    """The backend of RUN_DIR's last save (last.npz's meta; config.json for the first), or None
    where neither says (resume_config reports a folder that is not a run)."""
    try:
        with np.load(os.path.join(run_dir, "last.npz"), allow_pickle=False) as z:
            return json.loads(str(z["meta"])).get("backend")
    except (OSError, ValueError, KeyError, AttributeError, zipfile.BadZipFile):
        pass
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            saved = json.load(f)
        return saved.get("backend") if isinstance(saved, dict) else None
    except (OSError, ValueError):
        return None


def checkpoint_file(path):
    """What every tool takes as a checkpoint: a .npz file, or a train_cifar.py run folder, which
    means its best.npz, else its last.npz."""
    if not os.path.isdir(path):
        return path
    for name in ("best.npz", "last.npz"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise FileNotFoundError(f"{path} is a folder with neither best.npz nor last.npz: not a "
                            f"train_cifar.py run folder (or nothing saved there yet)")


def check_params(params, shapes: dict, what: str):
    """Refuse params whose names or shapes differ from `shapes` (a damaged or edited file)."""
    for name in sorted(set(shapes) | set(params)):
        got = tuple(params[name].shape) if name in params else None
        want = tuple(shapes[name]) if name in shapes else "no such parameter"
        if got != want:
            raise ValueError(f"{what}: parameter {name} should be {want} for its config, "
                             f"got {got}")


def load_vit_checkpoint(path):
    """-> (host params, ViTConfig, meta) of a plain-ViT checkpoint (or run folder), every
    parameter checked against the config saved with it: the analysis and transfer tools' reader."""
    from .config import ViTConfig  # noqa: PLC0415
    from .params import param_shapes  # noqa: PLC0415
    path = checkpoint_file(path)
    host, _, meta = load_checkpoint(path)
    arch = meta.get("arch", "vit")
    if arch != "vit":
        raise ValueError(f"{path} holds a {arch} model; this tool reads plain-ViT checkpoints "
                         f"(train_cifar.py --model vit) only")
    try:
        cfg = ViTConfig.from_dict(meta["model"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: no usable model config in its header ({e})") from e
    check_params(host, param_shapes(cfg), str(path))
    return host, cfg, meta
