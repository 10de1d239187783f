"""minivit: the Vision Transformer (Dosovitskiy et al. 2020) by hand, on NumPy or CuPy."""
from . import backend
from .config import ViTConfig, vit_b16, vit_h14, vit_l16
from .layers.loss import cross_entropy
from .model import attention_maps, predict, vit_backward, vit_forward
from .params import count_params, init_params, param_shapes

__version__ = "0.1.0"
__all__ = ["ViTConfig", "attention_maps", "backend", "count_params", "cross_entropy", "init_params",
           "param_shapes", "predict", "vit_b16", "vit_backward", "vit_forward", "vit_h14",
           "vit_l16"]
