"""The paper's fits and rules: Eq. (2) per dimension (`law`), the star
sweep (`star_sweep`), the sweep plans and the scaling rule (`plan`), and the
joint law over all dimensions (`joint`)."""
