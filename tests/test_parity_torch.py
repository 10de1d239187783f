"""Parity with a plain PyTorch ViT in float64: logits within 1e-10, every gradient within 1e-8."""
import numpy as np
import pytest
from conftest import torch_or_skip

from minivit import ViTConfig, cross_entropy, init_params, vit_backward, vit_forward
from minivit.backend import to_device, to_numpy
from minivit.io import from_timm_state_dict, to_timm_state_dict


@pytest.mark.parametrize("pool,gelu", [("cls", "none"), ("gap", "tanh")])
def test_logits_and_gradients_match_torch(pool, gelu):
    torch = torch_or_skip()
    from torch_vit import TorchViT
    cfg = ViTConfig(image_size=(16, 12), patch_size=4, num_classes=7, dim=32, depth=2, heads=4,
                    mlp_dim=48, pool=pool, gelu=gelu)
    params = init_params(cfg, seed=3, dtype="float64", zero_head=False)
    rng = np.random.default_rng(0)
    params = {k: v + to_device(rng.normal(0, 0.05, v.shape)) for k, v in params.items()}
    images = rng.standard_normal((5, 3, 16, 12))
    labels = rng.integers(0, 7, 5)

    ref = TorchViT(cfg).double()
    ref.load_state_dict({k: torch.from_numpy(v.copy())
                         for k, v in to_timm_state_dict(params).items()})
    x = torch.from_numpy(images).requires_grad_(True)
    ref_logits = ref(x)
    ref_loss = torch.nn.functional.cross_entropy(ref_logits, torch.from_numpy(labels),
                                                 label_smoothing=0.1)
    ref_loss.backward()

    logits, cache = vit_forward(params, to_device(images), cfg)
    loss, dlogits = cross_entropy(logits, to_device(labels), label_smoothing=0.1)
    dimages, grads = vit_backward(dlogits, cache)

    assert np.abs(to_numpy(logits) - ref_logits.detach().numpy()).max() < 1e-10
    assert abs(float(loss) - ref_loss.item()) < 1e-12
    assert np.abs(to_numpy(dimages) - x.grad.numpy()).max() < 1e-8
    ref_grads = {k: p.grad.numpy() for k, p in ref.named_parameters()}
    ours = to_timm_state_dict(grads)
    assert set(ours) == set(ref_grads)
    for k, g in ref_grads.items():
        assert np.abs(ours[k] - g).max() < 1e-8, k
        assert np.abs(g).max() > 0, k


def test_state_dict_round_trip():
    torch = torch_or_skip()
    from torch_vit import TorchViT
    cfg = ViTConfig(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2, mlp_dim=8)
    sd = {k: v.detach().numpy() for k, v in TorchViT(cfg).double().state_dict().items()}
    back = to_timm_state_dict(from_timm_state_dict(sd, cfg))
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
    del torch
