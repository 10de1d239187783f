"""Plain PyTorch references (not timm) for the hybrid ViT and CMT, with the same parameter
names as minivit's, for the parity tests. PyTorch appears only in tests/ and benchmarks/."""
import numpy as np
import torch
from torch import nn
from torch_vit import TorchViT

from minivit.backend import to_numpy
from minivit.io import to_timm_state_dict


class ConvBNAct(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TorchHybrid(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        chans = (cfg.in_channels,) + tuple(cfg.stem_channels)
        self.stem = nn.ModuleList(ConvBNAct(chans[i], chans[i + 1], s)
                                  for i, s in enumerate(cfg.stem_strides))
        self.vit = TorchViT(cfg.vit)

    def forward(self, x):
        for layer in self.stem:
            x = layer(x)
        return self.vit(x)


def hybrid_state_dict(params, state, cfg):
    """minivit hybrid params + BN state -> TorchHybrid's state_dict (torch tensors)."""
    stem = {k: v for k, v in {**params, **state}.items() if k.startswith("stem.")}
    vit = to_timm_state_dict({k: v for k, v in params.items() if not k.startswith("stem.")},
                             in_channels=cfg.stem_channels[-1])
    sd = {**{k: to_numpy(v) for k, v in stem.items()}, **{"vit." + k: v for k, v in vit.items()}}
    sd.update({k[:-len("running_mean")] + "num_batches_tracked": np.array(0)
               for k in state if k.endswith("running_mean")})
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


def hybrid_torch_grads(model, cfg):
    """TorchHybrid's parameter gradients under minivit's names and layouts."""
    g = {k: p.grad.numpy() for k, p in model.named_parameters()}
    out = {k: v for k, v in g.items() if k.startswith("stem.")}
    for name, v in g.items():
        if not name.startswith("vit."):
            continue
        k = name[4:]
        if k == "patch_embed.proj.weight":
            out["patch_embed.weight"] = v.reshape(v.shape[0], -1).T
        elif k == "patch_embed.proj.bias":
            out["patch_embed.bias"] = v
        else:
            out[k] = v.T if v.ndim == 2 else v
    return out
