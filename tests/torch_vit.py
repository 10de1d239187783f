"""A plain PyTorch ViT (not timm) with timm's state_dict names: the reference for parity tests
and benchmarks. PyTorch appears only here and in benchmarks/, never in minivit/."""
import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * (D // self.heads) ** -0.5
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Module):
    def __init__(self, dim, hidden, approximate):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_dim, eps, approximate):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, approximate)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)          # (B, N, D)


class TorchViT(nn.Module):
    """Built from a minivit ViTConfig (duck-typed: only its fields are read)."""

    def __init__(self, cfg):
        super().__init__()
        self.pool = cfg.pool
        self.patch_embed = PatchEmbed(cfg.in_channels, cfg.dim, cfg.patch_size)
        if cfg.pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        approximate = "none" if cfg.gelu == "none" else "tanh"
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_dim, cfg.ln_eps, approximate)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def forward(self, images):
        x = self.patch_embed(images)
        if self.pool == "cls":
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))
