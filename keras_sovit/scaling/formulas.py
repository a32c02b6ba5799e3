"""The scaling-law formulas, written once.

Each law is linear in its non-negative coefficients once its exponents are
fixed, so each comes as `*_terms` (the columns the coefficients multiply,
which the fits use as a design matrix) and the law itself (the columns
combined with the coefficients). Everything broadcasts like numpy.

- Eq. (2), one dimension x against compute t:
  f(x, t) = α x^(−a) + (β x^b + ξ) t^(−c) + ε.
- Eq. (3), the decomposable law over x = (width, depth, mlp_dim):
  f(x, t) = Σ_k α_k x_k^(−a_k) + (Σ_k β_k x_k^(b_k) + ξ) t^(−c) + ε.
- The data-limited law (Chinchilla's form), with e = examples seen:
  f(x, e) = Σ_k α_k x_k^(−a_k) + B e^(−c) + ε.

Reference:
- [Alabdulmohsin et al., 2023](https://arxiv.org/abs/2305.13035)
- [Hoffmann et al., 2022](https://arxiv.org/abs/2203.15556)
"""

import numpy as np

EQ2_PARAMS = ("alpha", "a", "beta", "b", "xi", "eps", "c")


def _combine(coefficients, terms):
    return sum(w * term for w, term in zip(coefficients, terms))


def eq2_terms(x, t, a, b, c):
    """Columns of Eq. (2) for the coefficients (α, β, ξ, ε)."""
    x = np.asarray(x, dtype=float)
    t_c = np.asarray(t, dtype=float) ** (-c)
    return [x ** (-a), x**b * t_c, t_c, np.ones_like(x * t_c)]


def eq2(x, t, alpha, a, beta, b, xi, eps, c):
    """Eq. (2): α x^(−a) + (β x^b + ξ) t^(−c) + ε.

    Example:

    ```python
    from keras_sovit.scaling.formulas import eq2
    eq2(16.0, 1e3, alpha=2.0, a=0.5, beta=0.01, b=1.0, xi=1.0, eps=0.1,
        c=0.65)
    ```
    """
    return _combine((alpha, beta, xi, eps), eq2_terms(x, t, a, b, c))


def eq2_loss(params, x, t):
    """Eq. (2) with the seven parameters given as a dict (`EQ2_PARAMS`)."""
    return eq2(x, t, **{k: params[k] for k in EQ2_PARAMS})


def capacity_terms(x, a):
    """Columns x_k^(−a_k), one per dimension, shared by both joint laws."""
    return [np.asarray(x_k, dtype=float) ** (-a_k) for x_k, a_k in zip(x, a)]


def eq3_terms(x, t, a, b, c):
    """Columns of Eq. (3) for (α_1..α_3, β_1..β_3, ξ, ε).

    Args:
        x: three arrays (width, depth, mlp_dim).
        t: compute in GFLOPs.
        a, b: three exponents each. c: the data exponent.
    """
    t_c = np.asarray(t, dtype=float) ** (-c)
    capacity = capacity_terms(x, a)
    compute = [np.asarray(x_k, dtype=float) ** b_k * t_c
               for x_k, b_k in zip(x, b)]
    ones = np.ones_like(capacity[0] * t_c)
    return capacity + compute + [t_c * ones, ones]


def eq3(x, t, alpha, a, beta, b, xi, eps, c):
    """Eq. (3), the decomposable law, for x = (width, depth, mlp_dim)."""
    return _combine(
        (*alpha, *beta, xi, eps), eq3_terms(x, t, a, b, c)
    )


def data_limited_terms(x, examples, a, c):
    """Columns of the data-limited law for (α_1..α_3, B, ε)."""
    e_c = np.asarray(examples, dtype=float) ** (-c)
    capacity = capacity_terms(x, a)
    ones = np.ones_like(capacity[0] * e_c)
    return capacity + [e_c * ones, ones]


def data_limited(x, examples, alpha, a, B, c, eps):
    """Σ_k α_k x_k^(−a_k) + B e^(−c) + ε, with e the examples seen."""
    return _combine(
        (*alpha, B, eps), data_limited_terms(x, examples, a, c)
    )
