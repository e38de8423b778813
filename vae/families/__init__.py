"""Model families: the networks (`models`), p(x | z) (`likelihoods`), p(z) (`priors`, and a
prior with state in a module of its own), the posterior's flows (`flows`) and the
objectives that combine them (`objectives`: the reparameterized draw, KL, free bits, the ELBO
and IWAE bounds). Likelihoods, priors and flows each keep a registry: a new one is one
definition plus `register(...)`.

Every module of this package is imported with it, so that a family in a module of its own
registers itself by being here: adding one is adding one file.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f'{__name__}.{_module.name}')
