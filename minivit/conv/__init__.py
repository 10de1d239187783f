"""Convolution toolkit, each layer a *_forward(...) -> (out, cache) / *_backward(dout, cache)
-> (dx, grads) pair on NCHW arrays: conv2d (im2col/col2im), depthwise conv2d, BatchNorm2d
(running statistics in a separate `state` dict), ReLU, Swish, global average pooling."""
from .activations import relu_backward, relu_forward, swish_backward, swish_forward
from .batchnorm import batchnorm2d_backward, batchnorm2d_forward
from .conv2d import col2im, conv2d_backward, conv2d_forward, im2col, map_to_tokens, tokens_to_map
from .depthwise import depthwise_backward, depthwise_forward
from .pooling import gap_backward, gap_forward

__all__ = ["batchnorm2d_backward", "batchnorm2d_forward", "col2im", "conv2d_backward",
           "conv2d_forward", "depthwise_backward", "depthwise_forward", "gap_backward",
           "gap_forward", "im2col", "map_to_tokens", "relu_backward", "relu_forward",
           "swish_backward", "swish_forward", "tokens_to_map"]
