"""ViTConfig: the model's hyper-parameters as a small dataclass, with the paper's presets."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ViTConfig:
    image_size: int | tuple[int, int] = 32   # H = W, or (H, W)
    patch_size: int = 4                      # P
    in_channels: int = 3                     # C
    num_classes: int = 10                    # K
    dim: int = 128                           # D, the latent size
    depth: int = 6                           # L, the number of encoder blocks
    heads: int = 4                           # k, so D_h = D / k
    mlp_dim: int = 512
    dropout: float = 0.0                     # after E_pos, inside the MLP
    attn_dropout: float = 0.0                # on the attention probabilities
    drop_path: float = 0.0                   # stochastic depth, rising linearly to this
    pool: str = "cls"                        # "cls" (eq. 4) or "gap" (mean over tokens)
    gelu: str = "none"                       # "none" = exact erf GELU, "tanh" = JAX's approx
    ln_eps: float = 1e-6
    pos_embed: str = "1d"                    # "none", "1d", "2d" or "rel" (App. D.4)

    def __post_init__(self):
        H, W = self.hw
        P = self.patch_size
        for name in ("patch_size", "in_channels", "num_classes", "dim", "depth", "heads",
                     "mlp_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if H % P or W % P:
            raise ValueError(f"patch size {P} must divide the image size {H}x{W}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.pool not in ("cls", "gap"):
            raise ValueError(f"pool must be 'cls' or 'gap', got {self.pool!r}")
        if self.gelu not in ("none", "tanh"):
            raise ValueError(f"gelu must be 'none' or 'tanh', got {self.gelu!r}")
        if self.pos_embed not in ("none", "1d", "2d", "rel"):
            raise ValueError("pos_embed must be 'none', '1d', '2d' or 'rel', "
                             f"got {self.pos_embed!r}")
        if self.pos_embed == "2d" and self.dim % 2:
            raise ValueError("pos_embed='2d' needs an even dim (D/2 rows + D/2 columns), "
                             f"got {self.dim}")
        for name in ("dropout", "attn_dropout", "drop_path"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")

    @property
    def hw(self) -> tuple[int, int]:
        s = self.image_size
        return (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))

    @property
    def grid(self) -> tuple[int, int]:
        """The patch grid (h, w) = (H/P, W/P)."""
        H, W = self.hw
        return H // self.patch_size, W // self.patch_size

    @property
    def num_patches(self) -> int:
        """N = HW / P^2."""
        H, W = self.hw
        return (H // self.patch_size) * (W // self.patch_size)

    @property
    def num_tokens(self) -> int:
        """T = N + 1 with a class token, N with pool="gap"."""
        return self.num_patches + (self.pool == "cls")

    @property
    def patch_dim(self) -> int:
        """P^2 C, the length of one flattened patch x_p^i."""
        return self.patch_size ** 2 * self.in_channels

    def drop_path_rates(self) -> list[float]:
        """Stochastic-depth rate of each block, 0 at the first rising linearly to drop_path."""
        L = self.depth
        return [self.drop_path * i / max(L - 1, 1) for i in range(L)]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.hw) if not isinstance(self.image_size, int) else self.image_size
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ViTConfig:
        d = dict(d)
        if isinstance(d.get("image_size"), list):
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)

    def replace(self, **changes) -> ViTConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def cifar(cls, **kw) -> ViTConfig:
        """The CIFAR-10 example: P=4 -> N=64, D=128, z0 in R^{65x128}, depth 6, 4 heads, MLP 512."""
        return cls(**{**dict(image_size=32, patch_size=4, in_channels=3, num_classes=10,
                             dim=128, depth=6, heads=4, mlp_dim=512), **kw})


def vit_b16(**kw) -> ViTConfig:
    """ViT-Base/16 (Table 1): D=768, 12 layers, 12 heads, MLP 3072; 224 px, 1000 classes."""
    return ViTConfig(**{**dict(image_size=224, patch_size=16, num_classes=1000, dim=768,
                               depth=12, heads=12, mlp_dim=3072), **kw})


def vit_l16(**kw) -> ViTConfig:
    """ViT-Large/16: D=1024, 24 layers, 16 heads, MLP 4096."""
    return ViTConfig(**{**dict(image_size=224, patch_size=16, num_classes=1000, dim=1024,
                               depth=24, heads=16, mlp_dim=4096), **kw})


def vit_h14(**kw) -> ViTConfig:
    """ViT-Huge/14: D=1280, 32 layers, 16 heads, MLP 5120."""
    return ViTConfig(**{**dict(image_size=224, patch_size=14, num_classes=1000, dim=1280,
                               depth=32, heads=16, mlp_dim=5120), **kw})
