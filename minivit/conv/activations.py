"""Elementwise activations for the conv models (GELU lives in minivit.layers.gelu).

    ReLU(x) = max(x, 0),               ReLU'(x) = [x > 0]
    Swish(x) = x sigma(x),             Swish'(x) = sigma(x) (1 + x (1 - sigma(x)))
sigma(x) = (1 + tanh(x / 2)) / 2 is the logistic function without exp overflow.
"""
from ..backend import get_array_module


def relu_forward(x):
    mask = x > 0
    return x * mask, mask


def relu_backward(dy, mask):
    return dy * mask, {}


def sigmoid(x):
    xp = get_array_module(x)
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def swish_forward(x):
    s = sigmoid(x)
    return x * s, (x, s)


def swish_backward(dy, cache):
    x, s = cache
    return dy * (s * (1.0 + x * (1.0 - s))), {}
