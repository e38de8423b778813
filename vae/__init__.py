"""VAE research library. `vae.load(workdir)` returns a trained model (see vae/trained.py)."""

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


def load(workdir, checkpoint='best'):
  """Loads a trained model from a training workdir; see `vae.trained.load`."""
  from vae import trained  # pylint: disable=g-import-not-at-top
  return trained.load(workdir, checkpoint)
