"""erf for NumPy, which has none, accurate to ~1e-16 in float64 without SciPy.

W. J. Cody's rational Chebyshev approximations (Math. Comp. 23, 1969; netlib specfun CALERF),
the ones most C libraries use:
  |x| < 0.5        erf(x)  = x R1(x^2)                       (relative error < 6e-19)
  0.5 <= |x| < 4   erfc(x) = exp(-x^2) R2(|x|)               (< 6e-19)
  |x| >= 4         erfc(x) = exp(-x^2)/|x| (1/sqrt(pi) + R3(1/x^2)/x^2)  (< 3e-17)
Each R is a ratio of polynomials evaluated by Horner's rule; erf = 1 - erfc, odd symmetry.
Rounding in float64 leaves ~1e-16; the same code in float32 is accurate to float32 rounding.
Below: a cheaper erf for float32 (a rational function), and the float32 normal CDF that the
GELU uses on NumPy (a tanh form with no divide).
"""
import numpy as np

_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)
_SQRPI = 5.6418958354775628695e-1  # 1/sqrt(pi)


def _erf_small(x):
    """erf(x) for |x| < 0.5 (CALERF range 1)."""
    z = x * x
    num, den = _A[4] * z, z
    for i in range(3):
        num, den = (num + _A[i]) * z, (den + _B[i]) * z
    return x * (num + _A[3]) / (den + _B[3])


def _erfc_mid(y):
    """erfc(y) for 0.5 <= y < 4 (CALERF range 2)."""
    num, den = _C[8] * y, y
    for i in range(7):
        num, den = (num + _C[i]) * y, (den + _D[i]) * y
    return np.exp(-y * y) * (num + _C[7]) / (den + _D[7])


def _erfc_large(y):
    """erfc(y) for y >= 4 (CALERF range 3); underflows to 0 past y ~ 27."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        z = 1.0 / (y * y)
        num, den = _P[5] * z, z
        for i in range(4):
            num, den = (num + _P[i]) * z, (den + _Q[i]) * z
        r = z * (num + _P[4]) / (den + _Q[4])
        out = np.exp(-y * y) * (_SQRPI - r) / y
    return np.where(np.isfinite(y), out, 0.0).astype(y.dtype, copy=False)


def erf_numpy(x):
    """erf(x) elementwise for a float NumPy array, in x's dtype."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if x.dtype == np.float16:            # the polynomials pass 65504 (4^8 * 1230): in float32
        return erf_numpy(x.astype(np.float32)).astype(np.float16)
    y = np.abs(x)
    small = y < 0.5
    mid = (y >= 0.5) & (y < 4.0)
    out = np.empty_like(x)
    out[small] = _erf_small(x[small])
    erfc_mid = _erfc_mid(y[mid])
    out[mid] = np.copysign(1.0 - erfc_mid, x[mid]).astype(x.dtype, copy=False)
    big = ~(small | mid)
    erfc_big = _erfc_large(y[big])
    out[big] = np.copysign(1.0 - erfc_big, x[big]).astype(x.dtype, copy=False)
    out[np.isnan(x)] = np.nan
    return out


# float32: one branch-free rational function on [-4, 4] (erf(4) rounds to 1 in float32),
# erf(x) ~ x P(x^2) / Q(x^2), degrees 13/8 (the coefficients Eigen and XLA use for float32;
# max error ~2 ulp). No exp, no masks: a few multiply-adds that stay in cache.
_F32_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_F32_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def erf_float32(x, out=None):
    """erf(x) for a float32 NumPy array (max abs error 4.5e-7, under 4 ulp of 1), written to
    `out` if given. Accurate enough for float32 GELU; float64 keeps erf_numpy (gradient checks)."""
    t = np.clip(x, -4.0, 4.0)
    x2 = t * t
    p = x2 * _F32_P[0]
    p += _F32_P[1]
    for c in _F32_P[2:]:
        p *= x2
        p += c
    q = x2 * _F32_Q[0]
    q += _F32_Q[1]
    for c in _F32_Q[2:]:
        q *= x2
        q += c
    p *= t
    return np.divide(p, q, out=out)


# The normal CDF in float32, Phi(x) = (1 + tanh(g(x))) / 2 with g(x) = atanh(erf(x / sqrt 2)):
# g is odd and smooth (~x^2/4 far out). GELU's tanh approximation keeps two terms of it,
# sqrt(2/pi) (x + 0.044715 x^3), and misses Phi by up to 1.8e-4. Seven terms, x P(x^2) of degree
# 13, fitted on [0, 5.9] (weighted minimax: Lawson's iteration, weight dPhi/dg = sech^2(g)/2;
# tests/test_fast_paths.py refits them), miss it by < 1e-7: below float32's rounding of Phi near
# 1. One np.tanh (a SIMD pass) and 15 passes of multiply-adds, no divide and no clipping: ~30%
# cheaper than erf_float32's rational function (BENCHMARKS.md), and more accurate.
PHI_TANH_G = (0.7978849414816942, 0.03633308446479075, -3.2594837834547664e-05,
              -5.530625897494934e-05, 3.964757746004511e-06, -1.3226450870929437e-07,
              1.7562062855613047e-09)               # g(x) ~ sum_i c_i x^(2i+1)
_G32 = tuple(np.float32(c) for c in PHI_TANH_G)
# g' has no real root (g rises everywhere) and g(5.9) = 11.1, past where float32's tanh rounds to
# 1: Phi is exactly 1 (0) for x >= 5.9 (<= -5.9) with no clipping, and an x whose powers
# overflow gives g = +-inf, tanh = +-1 (tests/test_fast_paths.py checks both).


def normal_cdf_float32(x, out, u):
    """Phi(x) of a float32 array x into `out` (max abs error < 1e-7), every pass in place over
    out and the scratch array u (x's shape)."""
    with np.errstate(over="ignore"):                               # huge |x|: g = +-inf
        x2 = np.multiply(x, x, out=u)                              # u = x^2
        g = np.multiply(x2, _G32[-1], out=out)
        for c in reversed(_G32[1:-1]):                             # Horner in x^2
            g += c
            g *= x2
        g += _G32[0]
        g *= x                                                     # g(x)
    np.tanh(g, out=g)
    g *= np.float32(0.5)
    g += np.float32(0.5)
    return g
