"""CMT (Guo et al., CVPR 2022): convolutions and transformers in every block, by hand."""
from .config import CMTConfig, cmt_b, cmt_cifar, cmt_s, cmt_ti, cmt_xs
from .model import cmt_attention_maps, cmt_backward, cmt_forward
from .params import (
    cmt_param_shapes,
    cmt_state_shapes,
    count_cmt_params,
    init_cmt_params,
    init_cmt_state,
)

__all__ = ["CMTConfig", "cmt_attention_maps", "cmt_b", "cmt_backward", "cmt_cifar", "cmt_forward",
           "cmt_param_shapes", "cmt_s", "cmt_state_shapes", "cmt_ti", "cmt_xs",
           "count_cmt_params", "init_cmt_params", "init_cmt_state"]
