"""The truth suite: simulated losses the searches are judged on. `laws`
holds the simulated laws and `simulate`; `suite` the hidden truths outside
every fitted form and the noisy `Observer`."""
