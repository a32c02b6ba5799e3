"""A model-agnostic compute-optimal shape search: IsoFLOP trust regions.

Pure numpy/scipy. The search assumes only that, at a fixed compute, the
metric is smooth in log-shape with one basin, and that the optimum moves
smoothly with compute; it never assumes a functional form for the loss.
See `IsoFlopSearch` for the phases and their contracts.
"""

import itertools

import numpy as np

from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import image_hw

DIMS = ("width", "depth", "mlp_dim")


class ShapeCost:
    """Vectorised exact parameter and forward-GFLOP counts of `ShapeSpec`.

    Both counts are polynomials in (width, depth, mlp_dim) of degree at
    most (2, 1, 1). Their coefficients are read off `ShapeSpec.num_params`
    and `ShapeSpec.gflops` by exact interpolation on 12 small shapes, so
    the formulas live in one place (`ShapeSpec`) and this class only
    vectorises them. The interpolant is checked against `ShapeSpec` on two
    large shapes; a `RuntimeError` says so if `ShapeSpec` ever leaves this
    polynomial family. The head count does not enter either count.

    Args:
        patch_size: int. Defaults to `14`.
        image_size: int or (height, width). Defaults to `224`.
        pool_type: str. As in `ShapeSpec.gflops`. Defaults to `"map"`.

    Example:

    ```python
    from keras_sovit.scaling.isoflop import ShapeCost
    cost = ShapeCost(patch_size=14)
    cost.gflops(1152, 27, 4304)  # 220.35..., as ShapeSpec.gflops()
    cost.num_params([608, 1152], [10, 27], [928, 4304])
    ```
    """

    _POWERS = list(itertools.product((0, 1, 2), (0, 1), (0, 1)))

    def __init__(self, patch_size=14, image_size=224, pool_type="map"):
        self.patch_size = patch_size
        self.image_size = image_hw(image_size)
        self.pool_type = pool_type
        nodes = list(itertools.product((1, 2, 3), (1, 2), (1, 2)))
        basis = np.array([self._monomials(*n) for n in nodes])
        self._coef = {}
        for kind in ("gflops", "num_params"):
            values = [self._exact(kind, *n) for n in nodes]
            self._coef[kind] = np.linalg.solve(basis, np.array(values))
        self._check()

    def _exact(self, kind, width, depth, mlp_dim):
        shape = ShapeSpec(width, depth, mlp_dim, 1, self.patch_size)
        return getattr(shape, kind)(
            self.image_size, pool_type=self.pool_type, strict=False
        )

    def _monomials(self, width, depth, mlp_dim):
        w, d, m = (np.asarray(v, dtype=float) for v in (width, depth, mlp_dim))
        return np.stack(
            np.broadcast_arrays(*[w**i * d**j * m**k for i, j, k in
                                  self._POWERS]),
            axis=-1,
        )

    def _check(self):
        for shape in ((608, 10, 928), (1968, 40, 6144)):
            for kind in ("gflops", "num_params"):
                exact = self._exact(kind, *shape)
                got = float(getattr(self, kind)(*shape))
                if abs(got - exact) > 1e-9 * abs(exact):
                    raise RuntimeError(
                        f"ShapeSpec.{kind} is no longer a polynomial of "
                        f"degree (2, 1, 1): {got} vs {exact} at {shape}."
                    )

    def gflops(self, width, depth, mlp_dim):
        """Forward GFLOPs per image, as `ShapeSpec.gflops`, vectorised."""
        return self._monomials(width, depth, mlp_dim) @ self._coef["gflops"]

    def num_params(self, width, depth, mlp_dim):
        """Weights of the backbone, as `ShapeSpec.num_params`, vectorised."""
        return (
            self._monomials(width, depth, mlp_dim) @ self._coef["num_params"]
        )
