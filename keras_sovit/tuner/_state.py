"""The oracle's saved search configuration and the resume check."""

from keras_sovit.tuner._common import plain

# Constructor arguments that define the plan: on resume they must match the
# saved project (see the `ShapeOracle` docstring).
PLAN_KEYS = (
    "objective",
    "target_compute",
    "image_size",
    "star_center",
    "star_grids",
    "star_budgets",
    "grid",
    "grid_budget",
    "exponents",
    "base_shape",
    "base_compute",
    "rounding",
    "final_trials",
    "proposal_method",
    "validation_trials",
    "validation_compute",
    "n_bootstrap",
    "max_grid_extensions",
)


def search_config(oracle, objective):
    """The plan-defining settings of a freshly built oracle, JSON-safe."""
    star = oracle.run_star
    grid = oracle.run_grid
    return plain({
        "objective": [objective.name, objective.direction],
        "target_compute": oracle.target_compute,
        "image_size": list(oracle.image_size),
        "star_center": shape_dict(oracle.star_center) if star else None,
        "star_grids": oracle.star_grids if star else None,
        "star_budgets": oracle.star_budgets if star else None,
        "grid": oracle.grid if grid else None,
        "grid_budget": oracle.grid_budget if grid else None,
        "exponents": oracle.exponents,
        "base_shape": shape_dict(oracle.base_shape),
        "base_compute": oracle.base_compute,
        "rounding": _rounding_config(oracle.rounding),
        "final_trials": list(oracle.final_trials),
        "proposal_method": oracle.proposal_method,
        "validation_trials": oracle.validation_trials,
        "validation_compute": oracle.validation_compute,
        "n_bootstrap": oracle.n_bootstrap,
        "max_grid_extensions": oracle.max_grid_extensions,
    })


def check_resume(saved, current):
    """Raises if a plan-defining argument differs from the saved project."""
    changed = [k for k in PLAN_KEYS if saved.get(k) != current.get(k)]
    if not changed:
        return
    details = ", ".join(
        f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}"
        for k in changed
    )
    raise ValueError(
        "The ShapeOracle arguments that define the search differ "
        f"from the saved project ({details}). Pass overwrite=True "
        "or use a new project_name to start a new search. "
        f"Received: changed={changed}"
    )


def shape_dict(shape):
    return None if shape is None else shape.to_dict()


def _rounding_config(rounding):
    return {
        k: getattr(rounding, k, None)
        for k in ("width_multiple", "mlp_multiple", "num_heads", "head_dim")
    }
