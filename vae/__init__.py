"""VAE research library, in sub-packages by responsibility: families (models, likelihoods,
priors, flows, objectives), data, training, evaluation, reporting, sweeps, commands and
benchmarking (docs/extending.md, "Library layout").

The public API at the top: `vae.load(workdir)` returns a trained model
(vae/evaluation/trained.py); `vae.reparameterize(key, mean, logvar)` is the pathwise draw
z = mean + exp(logvar / 2) * eps (vae/families/objectives.py). Both import JAX on first use,
so `import vae` stays light (it only sets XLA's CPU flags below)."""

from vae import settings

# XLA's CPU backend hands convolutions to YNNPACK, which runs a convolution's kernel
# gradient (a window as large as the image) at about a third of Eigen's speed; this leaves
# convolutions to Eigen and everything else (dots included) as it was: the default conv model
# trains 2.2x faster on the CPU (docs/benchmarks.md). XLA reads the flag when JAX opens its
# backends, so it is set on import, before that; a `ynn_fusion_type` already in XLA_FLAGS
# is left alone, and jaxlib versions this was not tested with get nothing (XLA aborts on a
# flag it does not know).
CPU_CONV_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
TESTED_JAXLIB = '0.10.'


def _set_cpu_conv_flag():
  flags = settings.xla_flags()
  if 'xla_cpu_experimental_ynn_fusion_type' in flags:
    return
  try:
    from jaxlib import version  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  if version.__version__.startswith(TESTED_JAXLIB):
    settings.set_xla_flags(f'{flags} {CPU_CONV_FLAG}'.strip())


_set_cpu_conv_flag()
settings.inject_import_delay()  # the tests' window for a signal during imports (else 0)


def load(workdir, checkpoint='best', accept_changed_data=False, imports=()):
  """Loads a trained model from a training workdir; see `vae.evaluation.trained.load`
  (`imports`: the modules of your own families that the run was trained with)."""
  from vae.evaluation import trained  # pylint: disable=g-import-not-at-top
  return trained.load(workdir, checkpoint, accept_changed_data, imports)


def __getattr__(name):
  if name == 'reparameterize':
    from vae.families.objectives import reparameterize  # pylint: disable=g-import-not-at-top
    return reparameterize
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
