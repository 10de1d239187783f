# %% [markdown]
# # Lesson 1: arrays and the backend
#
# Everything in minivit is a plain n-dimensional array. The Vision Transformer is a
# handful of matrix products, sums and elementwise functions on arrays of these shapes
# (the CIFAR example used throughout the course):
#
# | symbol | shape | what |
# | --- | --- | --- |
# | x | 32 x 32 x 3 | one image (minivit stores a batch as (B, C, H, W) = (B, 3, 32, 32)) |
# | x_p | 64 x 48 | its N = 64 patches of P x P x C = 4 x 4 x 3 = 48 numbers |
# | z_0 | 65 x 128 | the tokens: a class token plus 64 patch embeddings of size D = 128 |
#
# This lesson answers three questions: which library holds the arrays (NumPy or CuPy),
# how code is written so it runs on both, and why gradient checks use float64.

# %%
import numpy as np

import minivit
from minivit import backend
from minivit.gradcheck import compare, numerical_gradient
from minivit.layers import gelu_backward, gelu_forward, linear_backward, linear_forward
from minivit.lesson_utils import check, check_true, finish

# %% [markdown]
# ## NumPy or CuPy: the `xp` convention
#
# CuPy copies NumPy's interface for CUDA GPUs, so `cupy.exp(a)` does on the GPU what
# `numpy.exp(a)` does on the CPU. minivit's code never names either library: it asks the
# arrays it was given which module they belong to, `xp = get_array_module(a)`, and calls
# `xp.exp`, `xp.zeros`, ... That is CuPy's own idiom. One switch decides where *new* arrays
# are made: `minivit.backend.use("cupy")` or the environment variable `MINIVIT_BACKEND=cupy`.

# %%
print("current backend:", backend.name())
a = backend.to_device(np.arange(6.0).reshape(2, 3))        # an array of the current backend
xp = backend.get_array_module(a)
print("get_array_module(a) is", xp.__name__, "| a.shape", a.shape, "| a.dtype", a.dtype)
try:
    backend.use("cupy")
    print("CuPy and a CUDA device are available")
    cupy_ok = True
except backend.BackendUnavailable as e:
    print("CuPy backend unavailable here:", e)
    cupy_ok = False
backend.use("numpy")

# %% [markdown]
# Every layer in `minivit/layers/` is written this way. `layernorm_forward`, for example,
# starts with `xp = get_array_module(x)` and then only calls `xp.sqrt`. When CuPy is present
# we run the same layer on both and compare; here the comparison is skipped if it is absent.

# %%
rng = np.random.default_rng(0)
x_host = rng.standard_normal((4, 65, 128))
y_np, _ = gelu_forward(x_host)
if cupy_ok:
    backend.use("cupy")
    y_gpu, _ = gelu_forward(backend.to_device(x_host))
    check("GELU numpy vs cupy", backend.to_numpy(y_gpu), y_np, 1e-12)
    backend.use("numpy")
else:
    print("  (skipped: numpy vs cupy comparison needs a GPU)")

# %% [markdown]
# ## float32 vs float64
#
# A float32 number has a 24-bit significand: relative spacing 2^-23 ~ 1.2e-7. float64 has
# 53 bits: 2^-52 ~ 2.2e-16. Training uses float32 (half the memory, faster). Checking a
# gradient is a different job: we compare the hand-written backward with a *finite
# difference*, the derivative estimated from the function alone,
#
#     df/dx ~ (f(x + h) - f(x - h)) / (2h).
#
# Its error has two parts. Taylor's theorem gives a truncation error ~ h^2 f'''/6, which
# shrinks with h. Rounding gives an error ~ eps_machine |f| / h, which *grows* as h shrinks.
# The best h balances them, h ~ eps^(1/3): with float64 that is ~ 1e-5 and the estimate is
# good to ~ 1e-10; with float32 it is ~ 5e-3 and the estimate is good only to ~ 1e-4. A
# bug that puts a 1e-5 relative error in a gradient is invisible in float32.

# %%
print("float32 eps", np.finfo(np.float32).eps, "| float64 eps", np.finfo(np.float64).eps)
print(f"{'h':>8} {'float32 error':>14} {'float64 error':>14}   (derivative of GELU at 0.7)")
x0 = 0.7
exact = float(gelu_backward(np.ones(1), gelu_forward(np.array([x0]))[1])[0][0])
for h in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8):
    errs = []
    for dt in (np.float32, np.float64):
        x_plus, x_minus = np.array([x0 + h], dt), np.array([x0 - h], dt)
        fd = (gelu_forward(x_plus)[0][0] - gelu_forward(x_minus)[0][0]) / (2 * h)
        errs.append(abs(float(fd) - exact))
    print(f"{h:8.0e} {errs[0]:14.2e} {errs[1]:14.2e}")


# %% [markdown]
# The same on a whole layer. `minivit.gradcheck.numerical_gradient` perturbs one element
# at a time; `compare` reports ||analytic - numeric|| / (||analytic|| + ||numeric||).
# The loss is L = sum(y * G) with a random G, so dL/dy = G is what we feed the backward.

# %%
def linear_check(dtype, h):
    r = np.random.default_rng(1)
    x = r.standard_normal((3, 48)).astype(dtype)            # three patches x_p
    W = r.standard_normal((48, 128)).astype(dtype)          # a patch embedding E
    G = r.standard_normal((3, 128)).astype(dtype)
    y, cache = linear_forward(x, W)
    _, grads = linear_backward(G, cache)                    # dL/dW = x^T G
    numeric = numerical_gradient(lambda: (linear_forward(x, W)[0] * G).sum(), W, eps=h,
                                 max_elems=200)
    return compare(grads["weight"], numeric)[0]


rel64 = linear_check(np.float64, 1e-6)
rel32 = linear_check(np.float32, 1e-2)
print(f"linear layer dW: relative error float64 {rel64:.1e}, float32 {rel32:.1e}")
check_true("float64 check is tight", rel64 < 1e-7, f"rel {rel64:.1e} < 1e-7")
check_true("float32 check is loose", rel32 > 1e-6, f"rel {rel32:.1e} > 1e-6")

# %% [markdown]
# So every gradient check in minivit (and in this course) runs in float64, with a
# threshold of 1e-7 on the relative error. The model itself keeps whatever dtype it is
# given: float32 images and float32 parameters give float32 logits and gradients.

# %%
cfg = minivit.ViTConfig.cifar(depth=1)
p32 = minivit.init_params(cfg, seed=0, dtype="float32")
img = backend.to_device(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
logits, cache = minivit.vit_forward(p32, img, cfg)
_, g32 = minivit.vit_backward(logits * 0 + 1, cache)
check_true("float32 in -> float32 out", logits.dtype == np.float32, str(logits.dtype))
check_true("float32 grads", all(g.dtype == np.float32 for g in g32.values()),
           f"{len(g32)} tensors")
finish()
