"""Named building blocks over a model's flat `params` and `state` dicts: a convolution, a
BatchNorm, an activation, and the conv -> BN -> act (or conv -> act -> BN) units the stems,
IRFFN and heads are made of. Gradients come back under the parameters' full names."""
import numpy as np

from .. import backend
from ..layers.gelu import gelu_backward, gelu_forward
from .activations import relu_backward, relu_forward, swish_backward, swish_forward
from .batchnorm import batchnorm2d_backward, batchnorm2d_forward
from .conv2d import conv2d_backward, conv2d_forward
from .depthwise import depthwise_backward, depthwise_forward

ACTIVATIONS = {"relu": (relu_forward, relu_backward), "gelu": (gelu_forward, gelu_backward),
               "swish": (swish_forward, swish_backward)}


def act_forward(x, act):
    if act is None:
        return x, None
    return ACTIVATIONS[act][0](x)


def act_backward(dy, act, cache):
    return dy if act is None else ACTIVATIONS[act][1](dy, cache)[0]


def buffers(state, name):
    """The running mean and variance of BatchNorm `name` ("stem.0.bn.") from `state`."""
    try:
        return state[name + "running_mean"], state[name + "running_var"]
    except (KeyError, TypeError):
        raise ValueError(f"state has no {name}running_mean/running_var: models with BatchNorm "
                         f"need the `state` dict of running statistics (see init_state)") from None


def init_bn_state(state_shapes: dict, dtype="float32") -> dict:
    """Running means 0 and variances 1, as PyTorch initialises them."""
    return {k: backend.to_device((np.ones if k.endswith("running_var") else np.zeros)(s, dtype))
            for k, s in state_shapes.items()}


def bn_forward(x, p, state, name, train):
    rm, rv = buffers(state, name)
    y, c = batchnorm2d_forward(x, p[name + "weight"], p[name + "bias"], rm, rv, train)
    return y, (c, name)


def bn_backward(dy, cache):
    c, name = cache
    dx, g = batchnorm2d_backward(dy, c)
    return dx, {name + k: v for k, v in g.items()}


def conv_forward(x, p, name, stride=1, padding=0, depthwise=False):
    fw = depthwise_forward if depthwise else conv2d_forward
    y, c = fw(x, p[name + "weight"], p.get(name + "bias"), stride, padding)
    return y, (c, name, depthwise)


def conv_backward(dy, cache):
    c, name, depthwise = cache
    dx, g = (depthwise_backward if depthwise else conv2d_backward)(dy, c)
    return dx, {name + k: v for k, v in g.items()}


def conv_unit_forward(x, p, state, conv, bn, *, stride=1, padding=0, act=None,
                      act_before_bn=False, depthwise=False, train=False):
    """conv -> BN -> act (act_before_bn: conv -> act -> BN, as CMT). conv, bn: name prefixes."""
    y, c_conv = conv_forward(x, p, conv, stride, padding, depthwise)
    if act_before_bn:
        y, c_act = act_forward(y, act)
        y, c_bn = bn_forward(y, p, state, bn, train)
    else:
        y, c_bn = bn_forward(y, p, state, bn, train)
        y, c_act = act_forward(y, act)
    return y, (c_conv, c_bn, c_act, act, act_before_bn)


def conv_unit_backward(dy, cache):
    c_conv, c_bn, c_act, act, act_before_bn = cache
    if act_before_bn:
        dy, g_bn = bn_backward(dy, c_bn)
        dy = act_backward(dy, act, c_act)
    else:
        dy = act_backward(dy, act, c_act)
        dy, g_bn = bn_backward(dy, c_bn)
    dx, g_conv = conv_backward(dy, c_conv)
    return dx, {**g_conv, **g_bn}
