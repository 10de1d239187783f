"""Every layer as a forward/backward pair: *_forward(...) -> (out, cache),
*_backward(dout, cache) -> (dx, grads)."""
from .attention import attention_backward, attention_forward, softmax_backward, softmax_forward
from .block import block_backward, block_forward
from .dropout import (
    drop_path_backward,
    drop_path_forward,
    drop_path_masks,
    dropout_backward,
    dropout_forward,
)
from .gelu import gelu_backward, gelu_forward
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward
from .loss import cross_entropy
from .mlp import mlp_backward, mlp_forward
from .patch import (
    embed_tokens_backward,
    embed_tokens_forward,
    patch_embed_backward,
    patch_embed_forward,
    patchify,
    unpatchify,
)

__all__ = [
    "attention_backward", "attention_forward", "block_backward", "block_forward",
    "cross_entropy", "drop_path_backward", "drop_path_forward", "drop_path_masks",
    "dropout_backward", "dropout_forward", "embed_tokens_backward", "embed_tokens_forward",
    "gelu_backward", "gelu_forward", "layernorm_backward", "layernorm_forward",
    "linear_backward", "linear_forward", "mlp_backward", "mlp_forward", "patch_embed_backward",
    "patch_embed_forward", "patchify", "softmax_backward", "softmax_forward", "unpatchify",
]
