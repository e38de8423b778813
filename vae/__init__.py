"""VAE research library. `vae.load(workdir)` returns a trained model (see vae/trained.py)."""


def load(workdir, checkpoint='best'):
  """Loads a trained model from a training workdir; see `vae.trained.load`."""
  from vae import trained  # pylint: disable=g-import-not-at-top
  return trained.load(workdir, checkpoint)
