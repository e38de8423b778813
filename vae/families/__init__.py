"""Model families: the networks (`models`), p(x | z) (`likelihoods`), p(z) (`priors`), the
posterior's flows (`flows`) and the objectives that combine them (`objectives`: the
reparameterized draw, KL, free bits, the ELBO and IWAE bounds). Likelihoods, priors and
flows each keep a registry: a new one is one definition plus `register(...)`."""
