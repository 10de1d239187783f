"""The convolution toolkit: gradient checks in float64 (every parameter and the input) and
parity with torch.nn.functional (conv2d incl. groups=C, batch_norm train/eval)."""
import numpy as np
import pytest
from conftest import assert_gradcheck, torch_or_skip
from test_gradcheck_layers import randn, with_input

from minivit.backend import to_device, to_numpy
from minivit.conv import (
    batchnorm2d_backward,
    batchnorm2d_forward,
    col2im,
    conv2d_backward,
    conv2d_forward,
    depthwise_backward,
    depthwise_forward,
    gap_backward,
    gap_forward,
    im2col,
    relu_backward,
    relu_forward,
    swish_backward,
    swish_forward,
)
from minivit.gradcheck import check_gradients

# (k, stride, padding, H, W): 3x3 same, strided, 1x1, the k == s reshape path, k == s with a
# remainder (general path), a 2x2 stride-1 overlap.
CONV_CASES = [(3, 1, 1, 5, 6), (3, 2, 1, 7, 6), (1, 1, 0, 4, 3), (2, 2, 0, 4, 6),
              (2, 2, 0, 5, 4), (2, 1, 0, 4, 4)]


@pytest.mark.parametrize("k,s,p,H,W", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_gradcheck(rng, k, s, p, H, W, bias):
    inputs = {"x": randn(rng, 2, 3, H, W), "weight": randn(rng, 4, 3, k, k)}
    if bias:
        inputs["bias"] = randn(rng, 4)
    rep = check_gradients(lambda x, weight, bias=None: conv2d_forward(x, weight, bias, s, p),
                          with_input(conv2d_backward), inputs)
    assert_gradcheck(rep)


@pytest.mark.parametrize("k,s,p,H,W", [(3, 1, 1, 5, 6), (3, 2, 1, 7, 6), (2, 2, 0, 4, 6),
                                       (4, 4, 0, 8, 8), (3, 1, 0, 5, 5)])
def test_depthwise_gradcheck(rng, k, s, p, H, W):
    inputs = {"x": randn(rng, 2, 3, H, W), "weight": randn(rng, 3, 1, k, k), "bias": randn(rng, 3)}
    rep = check_gradients(lambda x, weight, bias: depthwise_forward(x, weight, bias, s, p),
                          with_input(depthwise_backward), inputs)
    assert_gradcheck(rep)


def test_col2im_is_the_adjoint_of_im2col(rng):
    # <im2col(x), c> == <x, col2im(c)> for every x, c: col2im scatters exactly what im2col gathered.
    x = randn(rng, 2, 3, 7, 6)
    cols = im2col(x, 3, 2, 1)
    c = randn(rng, *cols.shape)
    assert np.isclose(float((cols * c).sum()), float((x * col2im(c, x.shape, 3, 2, 1)).sum()),
                      rtol=1e-12)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_gradcheck(rng, train):
    C = 3
    rm, rv = to_device(rng.standard_normal(C)), to_device(rng.random(C) + 0.5)
    inputs = {"x": randn(rng, 4, C, 3, 2, scale=2.0) + 1.0, "weight": randn(rng, C),
              "bias": randn(rng, C)}
    rep = check_gradients(lambda x, weight, bias: batchnorm2d_forward(x, weight, bias, rm.copy(),
                                                                      rv.copy(), train),
                          with_input(batchnorm2d_backward), inputs)
    assert_gradcheck(rep)


@pytest.mark.parametrize("fw,bw", [(relu_forward, relu_backward), (swish_forward, swish_backward),
                                   (gap_forward, gap_backward)])
def test_activations_and_pooling_gradcheck(rng, fw, bw):
    x = randn(rng, 2, 3, 4, 5, scale=2.0)
    x = x + 0.1 * np.sign(to_numpy(x))             # keep ReLU's inputs away from its kink
    assert_gradcheck(check_gradients(lambda x: fw(x), with_input(bw), {"x": x}))


def test_swish_is_finite_for_large_inputs():
    y, c = swish_forward(np.array([-1e4, -50.0, 0.0, 50.0, 1e4]))
    np.testing.assert_allclose(y, [0.0, -50.0 / (1 + np.exp(50.0)), 0.0, 50.0, 1e4], atol=1e-15)
    assert np.isfinite(swish_backward(np.ones(5), c)[0]).all()


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="does not fit input"):
        conv2d_forward(np.zeros((1, 3, 4, 4)), np.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="does not fit an input of size 2"):
        conv2d_forward(np.zeros((1, 3, 2, 2)), np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batchnorm2d_forward(np.zeros((1, 2, 1, 1)), np.ones(2), np.zeros(2), np.zeros(2),
                            np.ones(2), train=True)


# ---- parity with torch.nn.functional in float64 ----

def _grads_torch(torch, fn, *arrays, seed=0):
    ts = [torch.from_numpy(a.copy()).requires_grad_(True) for a in arrays]
    y = fn(*ts)
    G = torch.from_numpy(np.random.default_rng(seed).standard_normal(tuple(y.shape)))
    (y * G).sum().backward()
    return y.detach().numpy(), G.numpy(), [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("k,s,p,H,W", CONV_CASES)
def test_conv2d_matches_torch(rng, k, s, p, H, W):
    torch = torch_or_skip()
    x, w, b = rng.standard_normal((3, 4, H, W)), rng.standard_normal((5, 4, k, k)), \
        rng.standard_normal(5)
    ref, G, (dx_t, dw_t, db_t) = _grads_torch(
        torch, lambda x, w, b: torch.nn.functional.conv2d(x, w, b, stride=s, padding=p), x, w, b)
    y, cache = conv2d_forward(x, w, b, s, p)
    dx, g = conv2d_backward(G, cache)
    for ours, theirs in ((y, ref), (dx, dx_t), (g["weight"], dw_t), (g["bias"], db_t)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1), (4, 4, 0), (2, 2, 0)])
def test_depthwise_matches_torch_groups_c(rng, k, s, p):
    torch = torch_or_skip()
    C = 5
    x, w, b = rng.standard_normal((3, C, 8, 8)), rng.standard_normal((C, 1, k, k)), \
        rng.standard_normal(C)
    ref, G, (dx_t, dw_t, db_t) = _grads_torch(
        torch, lambda x, w, b: torch.nn.functional.conv2d(x, w, b, stride=s, padding=p,
                                                          groups=C), x, w, b)
    y, cache = depthwise_forward(x, w, b, s, p)
    dx, g = depthwise_backward(G, cache)
    for ours, theirs in ((y, ref), (dx, dx_t), (g["weight"], dw_t), (g["bias"], db_t)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_batchnorm_matches_torch_train_then_eval(rng):
    torch = torch_or_skip()
    C = 4
    bn = torch.nn.BatchNorm2d(C).double()          # momentum 0.1, eps 1e-5
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
    rm, rv = np.zeros(C), np.ones(C)
    for step in range(3):                          # three training steps move the running stats
        x = rng.standard_normal((5, C, 3, 4)) * 2 + step
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = bn.train()(xt)
        G = rng.standard_normal(x.shape)
        bn.zero_grad()
        (yt * torch.from_numpy(G)).sum().backward()
        y, cache = batchnorm2d_forward(x, gamma, beta, rm, rv, train=True)
        dx, g = batchnorm2d_backward(G, cache)
        np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12)
        np.testing.assert_allclose(g["weight"], bn.weight.grad.numpy(), atol=1e-12)
        np.testing.assert_allclose(g["bias"], bn.bias.grad.numpy(), atol=1e-12)
        np.testing.assert_allclose(rm, bn.running_mean.numpy(), atol=1e-14)
        np.testing.assert_allclose(rv, bn.running_var.numpy(), atol=1e-14)
    assert not np.allclose(rv, 1.0)
    x = rng.standard_normal((2, C, 3, 3))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = bn.eval()(xt)
    G = rng.standard_normal(x.shape)
    (yt * torch.from_numpy(G)).sum().backward()
    rm0 = rm.copy()
    y, cache = batchnorm2d_forward(x, gamma, beta, rm, rv, train=False)
    np.testing.assert_array_equal(rm, rm0)         # eval leaves the buffers alone
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(batchnorm2d_backward(G, cache)[0], xt.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("ours,theirs", [
    ((relu_forward, relu_backward), "relu"), ((swish_forward, swish_backward), "silu"),
    ((gap_forward, gap_backward), "gap")])
def test_activations_and_pooling_match_torch(rng, ours, theirs):
    torch = torch_or_skip()
    fn = {"relu": torch.relu, "silu": torch.nn.functional.silu,
          "gap": lambda t: torch.nn.functional.adaptive_avg_pool2d(t, 1).flatten(1)}[theirs]
    x = rng.standard_normal((2, 3, 4, 5)) * 3
    ref, G, (dx_t,) = _grads_torch(torch, fn, x)
    y, cache = ours[0](x)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(ours[1](G, cache)[0], dx_t, rtol=0, atol=1e-14)
