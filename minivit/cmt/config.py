"""CMTConfig (Guo et al., "CMT: Convolutional Neural Networks Meet Vision Transformers", CVPR
2022) and its presets, with the dimensions of the official code: huawei-noah/Efficient-AI-
Backbones, cmt_pytorch/cmt.py (class CMT and the cmt_ti / cmt_xs / cmt_s / cmt_b registrations:
embed_dims, stem_channel, num_heads, depths, mlp_ratios, sr_ratios = (8, 4, 2, 1), qkv_bias,
fc_dim 1280, head dropout dp; block LayerNorms eps 1e-6, the patch-embedding LayerNorm eps 1e-5).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

STAGES = "abcd"


@dataclass(frozen=True)
class CMTConfig:
    image_size: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    embed_dims: tuple = (46, 92, 184, 368)      # D of each stage
    stem_channel: int = 16
    stem_stride: int = 2                        # the first stem conv's stride (CIFAR: 1)
    fc_dim: int = 1280
    num_heads: tuple = (1, 2, 4, 8)
    mlp_ratios: tuple = (3.6, 3.6, 3.6, 3.6)    # IRFFN expansion R: hidden = int(D R)
    depths: tuple = (2, 2, 10, 2)
    sr_ratios: tuple = (8, 4, 2, 1)             # k of LMHSA's k x k stride-k key/value reduction
    drop_path: float = 0.0                      # stochastic depth, rising linearly to this
    head_dropout: float = 0.1                   # dropout before the classifier (official `dp`)
    ln_eps: float = 1e-6
    embed_ln_eps: float = 1e-5

    def __post_init__(self):
        for name in ("embed_dims", "num_heads", "mlp_ratios", "depths", "sr_ratios"):
            v = tuple(getattr(self, name))
            object.__setattr__(self, name, v)
            if len(v) != 4:
                raise ValueError(f"{name} needs one value per stage (4), got {v}")
        for D, h in zip(self.embed_dims, self.num_heads, strict=True):
            if D % h:
                raise ValueError(f"stage dim {D} must be divisible by its heads {h}")
        side = self.stem_size
        for i, k in enumerate(self.sr_ratios):
            if side % 2:
                raise ValueError(f"stage {STAGES[i]}: a {side}x{side} map cannot be halved by the "
                                 f"2x2 stride-2 patch aggregation (image_size {self.image_size})")
            side //= 2
            if side % k:
                raise ValueError(f"stage {STAGES[i]}: sr_ratio {k} must divide the {side}x{side} "
                                 f"token map")
        for name in ("drop_path", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")

    @property
    def stem_size(self) -> int:
        """Side after the stem (conv3x3, padding 1, stride stem_stride, then two stride 1)."""
        return (self.image_size - 1) // self.stem_stride + 1

    def stage_side(self, i) -> int:
        """Side of stage i's token map: the stem's halved i + 1 times."""
        return self.stem_size >> (i + 1)

    def num_tokens(self, i) -> int:
        """N of stage i."""
        return self.stage_side(i) ** 2

    def num_keys(self, i) -> int:
        """N / k^2: the keys and values LMHSA attends to in stage i."""
        return (self.stage_side(i) // self.sr_ratios[i]) ** 2

    def hidden_dim(self, i) -> int:
        return int(self.embed_dims[i] * self.mlp_ratios[i])

    def drop_path_rates(self) -> list[float]:
        """One rate per block over all stages, 0 rising linearly to drop_path (torch.linspace)."""
        n = sum(self.depths)
        return [self.drop_path * j / max(n - 1, 1) for j in range(n)]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> CMTConfig:
        return cls(**d)

    def replace(self, **changes) -> CMTConfig:
        return dataclasses.replace(self, **changes)


def cmt_ti(**kw) -> CMTConfig:
    """CMT-Ti at 160 px (the official defaults): 9.49M parameters."""
    return CMTConfig(**{**dict(image_size=160), **kw})


def cmt_xs(**kw) -> CMTConfig:
    """CMT-XS at 192 px: dims x 0.9 of S (52, 104, 208, 416), depth (3, 3, 12, 3), R = 3.77."""
    return CMTConfig(**{**dict(image_size=192, embed_dims=(52, 104, 208, 416), stem_channel=16,
                               depths=(3, 3, 12, 3), mlp_ratios=(3.77,) * 4), **kw})


def cmt_s(**kw) -> CMTConfig:
    """CMT-S at 224 px: dims (64, 128, 256, 512), stem 32, depth (3, 3, 16, 3), R = 4."""
    return CMTConfig(**{**dict(image_size=224, embed_dims=(64, 128, 256, 512), stem_channel=32,
                               depths=(3, 3, 16, 3), mlp_ratios=(4,) * 4), **kw})


def cmt_b(**kw) -> CMTConfig:
    """CMT-B at 256 px: dims (76, 152, 304, 608), stem 38, depth (4, 4, 20, 4), R = 4, dp 0.3."""
    return CMTConfig(**{**dict(image_size=256, embed_dims=(76, 152, 304, 608), stem_channel=38,
                               depths=(4, 4, 20, 4), mlp_ratios=(4,) * 4, head_dropout=0.3),
                        **kw})


def cmt_cifar(**kw) -> CMTConfig:
    """CMT-Ti's widths and depths for 32 px CIFAR-10.

    With the paper's strides a 32 px image leaves 16x16 after the stem and 8, 4, 2, 1 tokens
    per side in the stages; k = (8, 4, 2, 1) then reduces every stage's keys to a single token,
    so each query's softmax is over one key (A = 1: attention is constant and B gets no
    gradient). Here the stem keeps 32x32 (stride 1), the stages see 16, 8, 4, 2 per side, and
    k = (4, 2, 1, 1) leaves N / k^2 = 16, 16, 16, 4 keys: real attention in every stage, the
    same 16 keys as CMT-Ti's first two stages at 160 px.
    """
    return CMTConfig(**{**dict(image_size=32, num_classes=10, stem_stride=1,
                               sr_ratios=(4, 2, 1, 1)), **kw})
