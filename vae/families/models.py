"""Flax encoders, decoders, the VAE and its deterministic twin, the plain autoencoder.

Shapes: images are [..., H, W, C] floats in [0, 1]; latents are [..., D]. Any
number of leading axes is allowed (the importance sampler decodes [S, B, D]).
The encoder returns the mean and log-variance of a diagonal Gaussian q(z | x);
the decoder returns the raw parameters of the likelihood, which `VAE.decode`
turns into a dict through `Likelihood.params`.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae.config_lib import check
from vae import config_lib
from vae.families import flows, gated_conv, objective_families, priors
# The networks (vae/families/networks.py), re-exported: models.MLPEncoder is the same class.
from vae.families.networks import ACTIVATIONS, ARCHS, UPSAMPLE, MLP  # noqa: F401
from vae.families.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vae.families.networks import depth_to_space  # noqa: F401
from vae.families.likelihoods import Likelihood
from vae.families.objectives import gaussian_kl_pair, log_normal_diag
from vae.families.objectives import reparameterize

class VAE(nn.Module):
  """Encoder, reparameterized posterior, prior, decoder and likelihood.

  One stochastic layer (the default): q(z | x) is the diagonal Gaussian of
  `encoder`, pushed through an inverse autoregressive flow when `flow` is set
  (its context is the encoder's last hidden layer); p(z) is `prior`, any object with the
  protocol of `vae.families.priors.Prior` (N(0, I) by default); p(x | z) is `decoder` and
  `likelihood`.

  Two stochastic layers (`encoder_z1` set; Tomczak & Welling's HVAE):
  q(z2 | x) from `encoder` (+ `flow`), q(z1 | x, z2) from `encoder_z1` on
  what `q_z1_input` says (+ `flow_z1`): 'shared', the concatenation [x, z2] with x's part of
  the first layer computed once under sample axes (`layers.SharedInputDense`; the same
  function as 'concatenated', the broadcast concatenation, and the one-draw path is that
  one); 'image_and_z2', x and z2 apart (the conv model's, vae/families/gated_conv.py); the prior on z2, p(z1 | z2) from
  `prior_z1`, and p(x | z1, z2) from `decoder` on z = [z1, z2]. Each layer has `latent_dim`
  dimensions; the decoder's input has `total_latent_dim`.

  With `deterministic=True` it is the plain autoencoder built from the same
  modules: z = mean, and the objective drops the KL term.
  """
  encoder: nn.Module
  decoder: nn.Module
  likelihood: Likelihood
  image_shape: Sequence[int]
  latent_dim: int
  deterministic: bool = False
  prior: Any = priors.StandardNormal()
  flow: Optional[nn.Module] = None
  encoder_z1: Optional[nn.Module] = None
  prior_z1: Optional[nn.Module] = None
  flow_z1: Optional[nn.Module] = None
  q_z1_input: str = 'concatenated'  # | 'shared' | 'image_and_z2' (see above)

  def setup(self):
    shape = self.likelihood.learned_scale_shape(self.image_shape)
    self.learned_log_scale = (None if shape is None else
                              self.param('log_scale', nn.initializers.zeros, shape))

  @property
  def layers(self) -> int:
    """Stochastic layers: 1 or 2."""
    return 1 if self.encoder_z1 is None else 2

  @property
  def total_latent_dim(self) -> int:
    """Dimensions of z = [z1, z2] (the decoder's input)."""
    return self.latent_dim * self.layers

  @property
  def analytic_kl(self) -> bool:
    """One layer, a diagonal posterior and a prior whose KL has a closed form per dimension
    (`priors.KL_TABLE`: N(0, I)): the objective takes `kl_per_dim`."""
    return self.kl_per_dim is not None and self.flow is None and self.layers == 1

  @property
  def kl_per_dim(self):
    """kl(mean, logvar) -> [..., D], the closed-form KL of the top layer's diagonal
    Gaussian against the prior (`priors.analytic_kl_per_dim`), or None."""
    return priors.analytic_kl_per_dim(self.prior)

  def prior_context(self):
    """What the prior may use (`priors.PriorContext`): the top layer's size and its
    posterior Gaussian as a function of images."""
    return priors.PriorContext(self.latent_dim, lambda u: self._q_top(u)[:2])

  def _q_top(self, x):
    """(mean, logvar, context or None) of the top layer's base Gaussian."""
    out = self.encoder(x)
    return out[0], out[1], (out[2] if len(out) > 2 else None)

  def _q_z1(self, x, z2):
    """(mean, logvar, context or None) of q(z1 | x, z2); z2 may carry sample axes. With
    sample axes (importance samples, the IWAE bound) an encoder that accepts a shared input
    runs x's part of its first layer once for all samples (the same function)."""
    z2 = z2.astype(jnp.float32)
    if self.q_z1_input == 'image_and_z2':  # the conv model's q(z1 | x, z2)
      out = self.encoder_z1(x, z2)
      return out[0], out[1], (out[2] if len(out) > 2 else None)
    flat = x.reshape(x.shape[:-3] + (-1,)).astype(jnp.float32)
    if z2.ndim > flat.ndim and self.q_z1_input == 'shared':
      out = self.encoder_z1((flat, z2))
    else:
      flat = jnp.broadcast_to(flat, z2.shape[:-1] + flat.shape[-1:])
      out = self.encoder_z1(jnp.concatenate([flat, z2], axis=-1))
    return out[0], out[1], (out[2] if len(out) > 2 else None)

  def top_mean(self, x):
    """The mean of the top layer's posterior q(z_top | x) [..., latent_dim] (the centre of a
    prior's component at x, for priors built from data)."""
    return self._q_top(x)[0]

  def encode(self, x):
    """x [..., H, W, C] -> (mean, logvar), each [..., total_latent_dim]: the diagonal
    Gaussian(s) the posterior starts from. With an IAF posterior this is the Gaussian
    before the flow (not q itself); with two layers it is [z1, z2] along the mean path:
    q(z2 | x) and then q(z1 | x, z2 = its mean)."""
    mean, logvar, _ = self._q_top(x)
    if self.layers == 1:
      return mean, logvar
    m1, lv1, _ = self._q_z1(x, mean)
    return jnp.concatenate([m1, mean], -1), jnp.concatenate([lv1, logvar], -1)

  def latent_point(self, x):
    """The posterior's noise-free latent: every eps = 0 (means pushed through any flow)."""
    mean, _, ctx = self._q_top(x)
    z = mean if self.flow is None else self.flow(mean, ctx)[0]
    if self.layers == 1:
      return z
    m1, _, ctx1 = self._q_z1(x, z)
    z1 = m1 if self.flow_z1 is None else self.flow_z1(m1, ctx1)[0]
    return jnp.concatenate([z1, z], -1)

  def decode(self, z):
    """z [..., total_latent_dim] -> likelihood parameters (dict of [..., H, W, C])."""
    return self.likelihood.params(self.decoder(z), self.learned_log_scale)

  def decode_mean(self, z):
    """z [..., total_latent_dim] -> mean image [..., H, W, C] in [0, 1]."""
    return self.likelihood.mean(self.decode(z))

  def prior_components(self):
    """(log_weights [K], means [K, D], logvars [K, D]) of a prior on the top layer that is a
    mixture of diagonal Gaussians (N(0, I): K = 1)."""
    return self.prior.components(self.prior_context())

  def log_prior(self, z):
    """log p(z) of the top layer in nats: z [..., latent_dim] -> [...]."""
    return self.prior.log_prob(z, self.prior_context())

  def sample_prior(self, key, n, temperature=1.0):
    """n draws [n, latent_dim] from the top layer's prior, the noise scaled by temperature."""
    return self.prior.sample(key, n, self.prior_context(), temperature)

  def posterior(self, x, key, num_samples=None):
    """A reparameterized draw from q(z | x) and the densities the objectives need.

    Args:
      x: images [B, H, W, C].
      key: PRNG key (one layer: the draw is `reparameterize(key, ...)`; two layers:
        split into the z2 and z1 keys).
      num_samples: None for one draw [B, ...], or S for [S, B, ...].

    Returns:
      dict: z [S?, B, total_latent_dim] (the decoder's input), log_q and log_p
      ([S?, B], summed over the layers), kl (a tuple per layer, top layer last,
      each [S?, B] or [B]: analytic where the layer is a diagonal Gaussian with a
      single-Gaussian prior (N(0, I) on top, p(z1 | z2) at the drawn z2), else
      log q - log p at the draw), mean and logvar of the top layer's base Gaussian.
    """
    k_top, k_z1 = jax.random.split(key) if self.layers == 2 else (key, None)
    mean, logvar, ctx = self._q_top(x)
    z = reparameterize(k_top, mean, logvar, num_samples)
    log_q = log_normal_diag(z, mean, logvar)
    if self.flow is not None:
      z, log_det = self.flow(z, ctx)
      log_q = log_q - log_det
    log_p = self.log_prior(z)
    kl_fn = self.kl_per_dim
    kl_top = (jnp.sum(kl_fn(mean, logvar), axis=-1) if kl_fn is not None and self.flow is None
              else log_q - log_p)
    out = {'mean': mean, 'logvar': logvar}
    if self.layers == 1:
      return dict(out, z=z, log_q=log_q, log_p=log_p, kl=(kl_top,))
    m1, lv1, ctx1 = self._q_z1(x, z)
    pm, plv = self.prior_z1(z)
    z1 = reparameterize(k_z1, m1, lv1)
    log_q1 = log_normal_diag(z1, m1, lv1)
    if self.flow_z1 is not None:
      z1, log_det1 = self.flow_z1(z1, ctx1)
      log_q1 = log_q1 - log_det1
    log_p1 = log_normal_diag(z1, pm, plv)
    kl1 = gaussian_kl_pair(m1, lv1, pm, plv) if self.flow_z1 is None else log_q1 - log_p1
    return dict(out, z=jnp.concatenate([z1, z], -1), log_q=log_q + log_q1,
                log_p=log_p + log_p1, kl=(kl1, kl_top))

  def __call__(self, x, key):
    """One posterior sample: returns dict(params, mean, logvar, z)."""
    if not self.analytic_kl and not self.deterministic:
      post = self.posterior(x, key)
      return {'params': self.decode(post['z']), 'mean': post['mean'],
              'logvar': post['logvar'], 'z': post['z']}
    mean, logvar = self.encode(x)
    z = mean if self.deterministic else reparameterize(key, mean, logvar)
    return {'params': self.decode(z), 'mean': mean, 'logvar': logvar, 'z': z}

  def generate_near(self, key, x, n, temperature=1.0):
    """Generation near given images (priors with `sample_near`): n images per image of x
    [M, H, W, C] decoded from the prior's component at x, z_top = mu(x) + temperature sigma eps (two
    layers: z1 ~ p(z1 | z2) with scaled noise too): [n, M, H, W, C] means."""
    z = self.prior.sample_near(key, self._q_top(x)[0], n, temperature)  # [n, M, D]
    if self.layers == 2:
      pm, plv = self.prior_z1(z)
      eps1 = jax.random.normal(jax.random.fold_in(key, 1), pm.shape)
      z = jnp.concatenate([pm + temperature * jnp.exp(0.5 * plv) * eps1, z], -1)
    return self.decode_mean(z)

  def generate(self, key, n, temperature=1.0):
    """n images decoded from the prior: [n, H, W, C] means. Every prior draw's noise is
    scaled by `temperature` (N(0, I): z = temperature * eps; mixtures: per component;
    two layers: z2 from the prior, then z1 ~ p(z1 | z2) with scaled noise too)."""
    z = self.sample_prior(key, n, temperature)
    if self.layers == 2:
      pm, plv = self.prior_z1(z)
      eps = jax.random.normal(jax.random.fold_in(key, 1), pm.shape)
      z = jnp.concatenate([pm + temperature * jnp.exp(0.5 * plv) * eps, z], -1)
    return self.decode_mean(z)


TYPES = ('vae', 'ae')
COMPUTE_DTYPES = ('float32', 'bfloat16')


def check_config(mc):
  """Checks the fields of `config.model` that this module reads (ConfigError naming them)."""
  check(mc.type in TYPES, f'model.type={mc.type!r}; choose one of {TYPES}')
  check(mc.arch in ARCHS, f'model.arch={mc.arch!r} is unknown; choose one of {ARCHS}')
  check(mc.latent_dim >= 1, f'model.latent_dim={mc.latent_dim} must be >= 1')
  check(mc.activation in ACTIVATIONS, f'model.activation={mc.activation!r} is unknown; choose '
        f'one of {tuple(ACTIVATIONS)}')
  check(all(h >= 1 for h in mc.hidden), f'model.hidden={mc.hidden} needs widths >= 1')
  check(len(mc.conv_channels) >= 1 and all(ch >= 1 for ch in mc.conv_channels),
        f'model.conv_channels={mc.conv_channels} needs at least one width >= 1')
  check(mc.conv_upsample in UPSAMPLE,
        f'model.conv_upsample={mc.conv_upsample!r}; choose one of {UPSAMPLE}')
  check(mc.logvar_min < mc.logvar_max, 'model.logvar_min must be < model.logvar_max')
  check(mc.compute_dtype in COMPUTE_DTYPES,
        f'model.compute_dtype={mc.compute_dtype!r}; choose one of {COMPUTE_DTYPES}')
  check(mc.init_std >= 0, 'model.init_std must be >= 0')
  priors.check_config(mc)
  flows.check_config(mc)
  check(mc.stochastic_layers in (1, 2),
        f'model.stochastic_layers={mc.stochastic_layers}; choose 1 or 2')
  check(mc.stochastic_layers == 1 or mc.arch == 'mlp' or mc.hidden,
        'model.arch=conv with model.stochastic_layers=2 needs model.hidden (the widths of '
        'p(z1 | z2) and of the dense layers around z), e.g. model.hidden=(300, 300)')
  check(mc.type == 'vae' or is_analytic_family(mc),
        'model.type=ae has no prior or posterior: keep model.prior=standard, '
        'model.posterior=diagonal, model.stochastic_layers=1')


def is_analytic_family(model):
  """N(0, I) prior, diagonal posterior, one stochastic layer (`model`: config.model, or its
  JSON dict): the KL is analytic per dimension, so free bits apply, and members of
  different latent sizes can share one vmapped program (padded under a mask)."""
  return (model['prior'], model['posterior'], model['stochastic_layers']) == (
      'standard', 'diagonal', 1)


def vmappable_fields(c):
  """The fields members of one vmapped group may differ in (config_lib.VMAPPABLE and the
  families' vmappable fields): model.latent_dim only where padded latents are equivalent
  (`is_analytic_family`, and an objective without auxiliary networks of their own shapes)."""
  paddable = (is_analytic_family(c['model'])
              and objective_families.build(c['objective']).aux_optimizer() is None)
  fields = config_lib.VMAPPABLE + config_lib.vmappable_declared()
  return fields if paddable else tuple(k for k in fields if k != 'model.latent_dim')


def check_vmappable(configs):
  """Raises ConfigError unless the configs differ only in `vmappable_fields`."""
  flat = [config_lib.flatten(config_lib.config_json(c)) for c in configs]
  sizes = {f['model.latent_dim'] for f in flat}
  check(len(sizes) == 1 or 'model.latent_dim' in vmappable_fields(configs[0]),
        f'members differ in model.latent_dim ({sorted(sizes)}), which one vmapped group can '
        f'pad only with model.prior=standard, model.posterior=diagonal, '
        f'model.stochastic_layers=1 and an objective without auxiliary networks; use --mode '
        f'sequential or processes, or one latent size')
  allowed = config_lib.VMAPPABLE + config_lib.vmappable_declared()
  for other in flat[1:]:
    diff = [k for k in flat[0] if flat[0][k] != other.get(k) and k not in allowed]
    check(not diff, f'members differ in {diff[:3]}, which one vmapped group cannot stack '
          f'(only {allowed}); use --mode sequential or processes')


def check_family(mc, oc):
  """Objective settings that need the analytic family (`is_analytic_family`)."""
  check(oc.free_bits == 0 or is_analytic_family(mc),
        'objective.free_bits needs the per-dimension KL, which only model.prior=standard, '
        'model.posterior=diagonal and model.stochastic_layers=1 have; set '
        'objective.free_bits=0')


def activation_floats(mc, image_shape):
  """{field: floats} that one example and one posterior sample hold in a forward pass,
  by the field that sets them: the image (input, decoder output, likelihood terms), every
  layer's output in encoder and decoder, the latent terms, a mixture prior's per-component
  densities."""
  h, w, c = image_shape
  ppc = Likelihood(mc.likelihood).params_per_channel
  if mc.arch == 'mlp':
    layers = ('model.hidden', 2 * sum(mc.hidden) * (2 if mc.gated else 1))
  elif mc.stochastic_layers == 2:  # ConvHVAE (vae/families/gated_conv.py); gated: 2 maps each
    widths, hh, ww = 0, h, w
    for ch in mc.conv_channels:  # two encoders, each a stride-1 and a stride-2 conv per width
      widths += 2 * 2 * (hh * ww * ch + max(1, hh // 2) * max(1, ww // 2) * ch)
      hh, ww = max(1, hh // 2), max(1, ww // 2)
    widths += 2 * 2 * hh * ww * gated_conv.FEATURE_CHANNELS
    widths += 2 * gated_conv.DECODER_CONVS * h * w * mc.conv_channels[-1]  # the decoder
    layers = ('model.conv_channels', widths + 2 * 4 * sum(mc.hidden))
  else:
    widths, hh, ww = 0, h, w
    for ch in mc.conv_channels:
      hh, ww = max(1, hh // 2), max(1, ww // 2)
      widths += 2 * hh * ww * ch * 4  # encoder and decoder, with the upsampling's 4x
    layers = ('model.conv_channels', widths + 2 * mc.conv_dense)
  terms = {'the image size': h * w * c * (2 + 2 * ppc), layers[0]: layers[1],
           'model.latent_dim': 8 * mc.latent_dim * mc.stochastic_layers}
  return terms


def cpu_chunk_loop(mc):
  """The chunk loop the CPU backend wants for this model: 'host' for convolutional models,
  whose convolutions XLA's CPU backend runs >10x slower inside a while loop; else 'device'."""
  return 'host' if mc.arch == 'conv' else 'device'


def has_posterior(mc):
  """Whether the model has a posterior (and so latent units to count): not the plain
  autoencoder (model.type=ae)."""
  return mc.type != 'ae'


def total_latent_dim(mc):
  """Dimensions of the decoder's input: latent_dim per stochastic layer."""
  return mc.latent_dim * mc.stochastic_layers


def check_image_shape(mc, image_shape):
  """A conv model halves H and W once per channel width: they must divide."""
  if mc.arch != 'conv':
    return
  factor = 2 ** len(mc.conv_channels)
  check(image_shape[0] % factor == 0 and image_shape[1] % factor == 0,
        f'model.arch=conv with {len(mc.conv_channels)} stride-2 layers needs H and W divisible '
        f'by {factor}, got {image_shape[0]}x{image_shape[1]}; change model.conv_channels')


def build_model(model_config, image_shape, dtype=None, q_z1_input='shared') -> VAE:
  """Builds the VAE (or autoencoder) that `model_config` describes.

  Args:
    model_config: the `model` section of a spec or config (see vae/config_lib.py).
    image_shape: (H, W, C) of the data.
    dtype: computation dtype (None: float32); parameters stay float32.
    q_z1_input: the MLP two-level model's q(z1 | x, z2) input under sample axes: 'shared'
      or 'concatenated' (the same function; scripts/benchmark.py's "before"). Without a
      hidden layer it is 'concatenated' (the shared path needs a first hidden layer); the
      conv model's is 'image_and_z2' whatever is given.

  Returns:
    An unbound `VAE` module.
  """
  mc = model_config
  check_config(mc)
  check_image_shape(mc, image_shape)
  likelihood = Likelihood(mc.likelihood, mc.gaussian_scale, mc.gaussian_fixed_scale,
                          bernoulli_impl=mc.bernoulli_impl)
  height, width, channels_in = image_shape
  out_shape = (height, width, channels_in * likelihood.params_per_channel)
  logvar_min = mc.logvar_min if mc.clamp_logvar else None
  logvar_max = mc.logvar_max if mc.clamp_logvar else None
  build_flow, features = flows.REGISTRY[mc.posterior]  # features: the flow's context
  two = mc.stochastic_layers == 2
  gaussian_mlp = lambda hidden, feats: MLPEncoder(
      mc.latent_dim, hidden, mc.activation, mc.gated, logvar_min, logvar_max, dtype,
      mc.init_std, feats, flat_input=True)
  encoder_z1 = gaussian_mlp(tuple(mc.hidden), features) if two else None
  if mc.arch == 'mlp':
    encoder = MLPEncoder(mc.latent_dim, tuple(mc.hidden), mc.activation, mc.gated,
                         logvar_min, logvar_max, dtype, mc.init_std, features)
    decoder = MLPDecoder(out_shape, tuple(reversed(mc.hidden)), mc.activation, mc.gated,
                         dtype, mc.init_std)
  elif two:  # ConvHVAE: gated conv networks (vae/families/gated_conv.py)
    channels, dense_width = tuple(mc.conv_channels), mc.hidden[-1]
    encoder = gated_conv.ConvTopEncoder(mc.latent_dim, channels, logvar_min, logvar_max,
                                        dtype, features)
    encoder_z1 = gated_conv.ConvZ1Encoder(mc.latent_dim, channels, dense_width, logvar_min,
                                          logvar_max, dtype, features)
    decoder = gated_conv.ConvHVAEDecoder(out_shape, channels_in, mc.latent_dim, channels,
                                         dense_width, dtype)
  else:
    encoder = ConvEncoder(mc.latent_dim, tuple(mc.conv_channels), mc.conv_dense,
                          mc.activation, logvar_min, logvar_max, dtype, features)
    decoder = ConvDecoder(out_shape, tuple(mc.conv_channels), mc.conv_dense, mc.activation,
                          mc.conv_upsample, dtype)
  make_flow = lambda: build_flow(mc, dtype)
  return VAE(encoder, decoder, likelihood, tuple(image_shape), mc.latent_dim,
             deterministic=(mc.type == 'ae'),
             prior=priors.build_prior(mc, image_shape),
             flow=make_flow(),
             encoder_z1=encoder_z1,
             prior_z1=gaussian_mlp(tuple(reversed(mc.hidden)), False) if two else None,
             flow_z1=make_flow() if two else None,
             q_z1_input=('image_and_z2' if mc.arch != 'mlp' else
                         q_z1_input if mc.hidden else 'concatenated'))
