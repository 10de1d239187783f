"""Plain PyTorch references (not timm) for the hybrid ViT and CMT, with the same parameter
names as minivit's, for the parity tests. PyTorch appears only in tests/ and benchmarks/."""
import numpy as np
import torch
from torch import nn
from torch_vit import TorchViT

from minivit import cross_entropy
from minivit.backend import to_device, to_numpy
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


# ---- CMT, written from the structure of the official cmt_pytorch/cmt.py (huawei-noah/
# Efficient-AI-Backbones), with its module names, so state_dicts line up name for name ----

class CMTAttention(nn.Module):
    def __init__(self, dim, heads, sr):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        if sr > 1:
            self.sr = nn.Sequential(nn.Conv2d(dim, dim, sr, sr, groups=dim), nn.BatchNorm2d(dim))

    def forward(self, x, H, W, rel_pos):
        B, N, C = x.shape
        h = self.heads
        q = self.q(x).reshape(B, N, h, C // h).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)
        k = self.k(x).reshape(B, -1, h, C // h).transpose(1, 2)
        v = self.v(x).reshape(B, -1, h, C // h).transpose(1, 2)
        attn = ((q @ k.transpose(-2, -1)) * (C // h) ** -0.5 + rel_pos).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class IRFFN(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.BatchNorm2d(hidden))
        self.proj = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.proj_bn = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Sequential(nn.Conv2d(hidden, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x, H, W):
        B, N, C = x.shape
        x = self.conv1(x.transpose(1, 2).reshape(B, C, H, W))
        x = self.proj_bn(nn.functional.gelu(self.proj(x) + x))
        return self.conv2(x).flatten(2).transpose(1, 2)


class CMTBlock(nn.Module):
    def __init__(self, dim, heads, hidden, sr, eps):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn = CMTAttention(dim, heads, sr)
        self.mlp = IRFFN(dim, hidden)
        self.proj = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, H, W, rel_pos):
        B, N, C = x.shape
        m = x.transpose(1, 2).reshape(B, C, H, W)
        x = (self.proj(m) + m).flatten(2).transpose(1, 2)
        x = x + self.attn(self.norm1(x), H, W, rel_pos)
        return x + self.mlp(self.norm2(x), H, W)


class PatchEmbed(nn.Module):
    def __init__(self, c_in, dim, eps):
        super().__init__()
        self.proj = nn.Conv2d(c_in, dim, 2, 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), x.shape[2:]


class TorchCMT(nn.Module):
    """Built from a minivit CMTConfig."""

    def __init__(self, cfg):
        super().__init__()
        S, c_in = cfg.stem_channel, cfg.in_channels
        for i in (1, 2, 3):
            setattr(self, f"stem_conv{i}", nn.Conv2d(c_in, S, 3, cfg.stem_stride if i == 1 else 1,
                                                     1))
            setattr(self, f"stem_norm{i}", nn.BatchNorm2d(S))
            c_in = S
        for i, L in enumerate("abcd"):
            D = cfg.embed_dims[i]
            setattr(self, f"patch_embed_{L}", PatchEmbed(c_in, D, cfg.embed_ln_eps))
            setattr(self, f"relative_pos_{L}", nn.Parameter(torch.randn(
                cfg.num_heads[i], cfg.num_tokens(i), cfg.num_keys(i))))
            setattr(self, f"blocks_{L}", nn.ModuleList(
                CMTBlock(D, cfg.num_heads[i], cfg.hidden_dim(i), cfg.sr_ratios[i], cfg.ln_eps)
                for _ in range(cfg.depths[i])))
            c_in = D
        self._fc = nn.Conv2d(c_in, cfg.fc_dim, 1)
        self._bn = nn.BatchNorm2d(cfg.fc_dim)
        self.head = nn.Linear(cfg.fc_dim, cfg.num_classes)

    def forward(self, x):
        for i in (1, 2, 3):
            x = nn.functional.gelu(getattr(self, f"stem_conv{i}")(x))
            x = getattr(self, f"stem_norm{i}")(x)
        for L in "abcd":
            x, (H, W) = getattr(self, f"patch_embed_{L}")(x)
            for blk in getattr(self, f"blocks_{L}"):
                x = blk(x, H, W, getattr(self, f"relative_pos_{L}"))
            x = x.transpose(1, 2).reshape(x.shape[0], -1, H, W)
        x = nn.functional.silu(self._bn(self._fc(x)))
        return self.head(x.mean(dim=(2, 3)))


def cmt_state_dict(params, state):
    """minivit CMT params + BN state -> TorchCMT's state_dict: linear weights transposed."""
    sd = {k: to_numpy(v).T if to_numpy(v).ndim == 2 else to_numpy(v)
          for k, v in {**params, **state}.items()}
    sd.update({k[:-len("running_mean")] + "num_batches_tracked": np.array(0)
               for k in state if k.endswith("running_mean")})
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


def cmt_torch_grads(model):
    return {k: p.grad.numpy().T if p.grad.ndim == 2 else p.grad.numpy()
            for k, p in model.named_parameters()}


def check_parity_steps(torch, ref, forward, backward, state, image_shape, num_classes, ref_grads):
    """Two training steps then one eval step on random batches, minivit against the torch
    module `ref` (already loaded with the same weights): logits within 1e-10, input and every
    parameter gradient within 1e-9 (cross-entropy loss), BN running statistics within 1e-12.
    Returns the largest errors seen: {"logits", "dimages", "grads", "state"}."""
    rng = np.random.default_rng(0)
    worst = dict.fromkeys(("logits", "dimages", "grads", "state"), 0.0)
    for train in (True, True, False):
        images, labels = rng.standard_normal(image_shape), rng.integers(0, num_classes,
                                                                       image_shape[0])
        ref.train(train)
        ref.zero_grad()
        x = torch.from_numpy(images).requires_grad_(True)
        ref_logits = ref(x)
        torch.nn.functional.cross_entropy(ref_logits, torch.from_numpy(labels)).backward()
        logits, cache = forward(to_device(images), train)
        dimages, grads = backward(cross_entropy(logits, to_device(labels))[1], cache)
        err = {"logits": np.abs(to_numpy(logits) - ref_logits.detach().numpy()).max(),
               "dimages": np.abs(to_numpy(dimages) - x.grad.numpy()).max()}
        theirs = ref_grads(ref)
        assert set(theirs) == set(grads)
        err["grads"] = max(np.abs(to_numpy(grads[k]) - g).max() for k, g in theirs.items())
        err["state"] = max((np.abs(to_numpy(v) - ref.state_dict()[k].numpy()).max()
                            for k, v in state.items()), default=0.0)
        assert err["logits"] < 1e-10 and err["dimages"] < 1e-9, err
        assert err["grads"] < 1e-9 and err["state"] < 1e-12, err
        worst = {k: max(v, err[k]) for k, v in worst.items()}
    return worst
