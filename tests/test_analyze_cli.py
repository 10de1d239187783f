"""`python -m minivit.analyze` on a small random checkpoint: every PNG is written; bad input."""
import json

import numpy as np
import pytest

from minivit import ViTConfig, init_params
from minivit.analyze import main, read_checkpoint
from minivit.checkpoint import save_checkpoint

CFG = ViTConfig(image_size=16, patch_size=4, num_classes=3, dim=16, depth=2, heads=2,
                mlp_dim=16)


def write_checkpoint(path, params, cfg):
    save_checkpoint(str(path), params, {"step": 0}, {"model": cfg.to_dict()})


@pytest.mark.parametrize("variant", ["1d", "2d", "rel"])
def test_all_figures_are_written(tmp_path, variant, capsys):
    pytest.importorskip("matplotlib")
    cfg = CFG.replace(pos_embed=variant)
    ckpt = tmp_path / "m.npz"
    write_checkpoint(ckpt, init_params(cfg, seed=0), cfg)
    main([str(ckpt), "--out", str(tmp_path / "fig"), "--images", "5"])
    names = {"rollout.png", "attention_distance.png", "embedding_filters.png", "analysis.json"}
    if variant != "rel":
        names.add("pos_embed_similarity.png")
    assert {p.name for p in (tmp_path / "fig").iterdir()} == names
    for n in names - {"analysis.json"}:
        assert (tmp_path / "fig" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((tmp_path / "fig" / "analysis.json").read_text())
    assert np.array(res["mean_attention_distance_px"]).shape == (2, 2)
    assert "figures written" in capsys.readouterr().out


def test_bad_checkpoints_are_named(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable minivit checkpoint"):
        read_checkpoint(str(bad))
    params = init_params(CFG, seed=0)
    params["pos_embed"] = params["pos_embed"][:, :5]
    write_checkpoint(tmp_path / "short.npz", params, CFG)
    with pytest.raises(ValueError, match=r"pos_embed should be \(1, 17, 16\)"):
        read_checkpoint(str(tmp_path / "short.npz"))
    with pytest.raises(SystemExit, match="error: .*pos_embed"):
        main([str(tmp_path / "short.npz"), "--out", str(tmp_path / "x")])


def test_without_matplotlib_the_message_is_clear(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    write_checkpoint(tmp_path / "m.npz", init_params(CFG, seed=0), CFG)
    with pytest.raises(SystemExit, match=r"pip install 'minivit\[plot\]'"):
        main([str(tmp_path / "m.npz"), "--out", str(tmp_path / "x"), "--images", "2"])


def test_data_draws_cifar_test_images(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    y = np.arange(6, dtype=np.int64)
    np.savez(tmp_path / "cifar-10-uint8.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    cfg = CFG.replace(image_size=32, patch_size=8)
    write_checkpoint(tmp_path / "m.npz", init_params(cfg, seed=0), cfg)
    main([str(tmp_path / "m.npz"), "--out", str(tmp_path / "fig"), "--data", str(tmp_path),
          "--images", "4"])
    assert json.loads((tmp_path / "fig" / "analysis.json").read_text())["images"] == 4
    with pytest.raises(SystemExit, match="CIFAR-10 not found"):
        main([str(tmp_path / "m.npz"), "--out", str(tmp_path / "f2"),
              "--data", str(tmp_path / "empty")])
