"""Group-relative advantage estimators for GRPO and its variants.

All functions are pure `jax.numpy` over a flat reward vector `rewards_s: f32[S]`, S = B*G, where
the G samples of one prompt are contiguous (`rewards_s.reshape(B, G)[b]` is prompt b's group).
`group_advantages` / `rloo_advantages` see all S rewards. `sharded_advantages` is the same math
for rewards split over mesh axes, computed inside the jitted update with `jax.shard_map` and
`jax.lax` collectives, whether a prompt's G samples sit on one device or are split across devices.

Estimators (all return f32[S]):
  * "grpo"      (r - mean_g) / (std_g + eps)      DeepSeekMath (arXiv 2402.03300) §4.1.2.
  * "batch_std" (r - mean_g) / (std_batch + eps)  Lite-PPO (arXiv 2508.08221), TRL "batch".
  * "dr_grpo"   r - mean_g                        Dr.GRPO (arXiv 2503.20783): no std division.
  * "rloo"      r - mean of the other G-1 rewards RLOO (Ahmadian et al. 2024, arXiv 2402.14740).

Standard deviation convention: `std_ddof=1` (sample std, Bessel-corrected) by default, because
TRL and verl (`torch.std`, unbiased by default) and Tunix (`std(ddof=1)`) all use it;
DeepSeekMath does not say. Pass `std_ddof=0` for the population std (the `jnp.std` default). For
G=2 and rewards {0, 1} the two give advantages of +-0.707 (ddof=1) and +-1 (ddof=0).
"""
import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

SCALES = ("group", "batch", "none")


def _check_rewards(rewards_s: jax.Array, group_size: int) -> jax.Array:
  """Validates the static shapes of f32[B*G] rewards and returns them as float32."""
  if group_size < 1:
    raise ValueError(f"group_size must be >= 1, got {group_size}.")
  if rewards_s.ndim != 1:
    raise ValueError(f"rewards must be 1-D f32[B*G], got shape {rewards_s.shape}.")
  if rewards_s.shape[0] % group_size:
    raise ValueError(
        f"len(rewards)={rewards_s.shape[0]} is not a multiple of group_size={group_size}.")
  return rewards_s.astype(jnp.float32)


def _grouped(rewards_s: jax.Array, group_size: int) -> jax.Array:
  """Reshapes f32[B*G] rewards to f32[B, G], validating the static shapes."""
  return _check_rewards(rewards_s, group_size).reshape(-1, group_size)


@dataclasses.dataclass(frozen=True)
class _Groups:
  """Sums over the groups (and over the whole batch) of the reward rows one device holds.

  With `axis_names` None the rows are the whole batch, on one device. Inside `jax.shard_map`,
  `axis_names` are the mesh axes the rows are split over, in order (device i of their flattened
  index holds global rows [i*L, (i+1)*L)). Two layouts:
    * L a multiple of G: every group lies on one device; group sums are local, only batch-wide
      sums (the batch std) cross devices (`jax.lax.psum`).
    * otherwise a group straddles devices (e.g. G = 8 samples split over 4 devices along
      `data`): each device adds its rows into slots of all B groups, one `jax.lax.psum` of B
      floats over `axis_names` completes every group's sum, and each row reads its own.
  """
  size: int
  axis_names: tuple[str, ...] | None = None

  def _local(self, n_rows: int) -> bool:
    return self.axis_names is None or n_rows % self.size == 0

  def _reduce(self, x_l: jax.Array, local_op, scatter, collective, init: float) -> jax.Array:
    g, n_rows = self.size, x_l.shape[0]
    if self._local(n_rows):
      s = local_op(x_l.reshape(-1, g), axis=-1, keepdims=True)
      return jnp.broadcast_to(s, (n_rows // g, g)).reshape(-1)
    n_dev = jax.lax.psum(1, self.axis_names)
    group_of_row = (jax.lax.axis_index(self.axis_names) * n_rows + jnp.arange(n_rows)) // g
    slots = scatter(jnp.full((n_dev * n_rows // g,), init, x_l.dtype).at[group_of_row], x_l)
    return collective(slots, self.axis_names)[group_of_row]

  def sum(self, x_l: jax.Array) -> jax.Array:
    """Each row's group sum, f32[L]."""
    return self._reduce(x_l, jnp.sum, lambda at, x: at.add(x), jax.lax.psum, 0.0)

  def spread(self, x_l: jax.Array) -> jax.Array:
    """Each row's group max - min, f32[L]."""
    hi = self._reduce(x_l, jnp.max, lambda at, x: at.max(x), jax.lax.pmax, -jnp.inf)
    lo = self._reduce(x_l, jnp.min, lambda at, x: at.min(x), jax.lax.pmin, jnp.inf)
    return hi - lo

  def total(self, x_l: jax.Array) -> jax.Array:
    """The sum over the whole batch, f32[]."""
    s = x_l.sum()
    return s if self.axis_names is None else jax.lax.psum(s, self.axis_names)

  def count(self, n_rows: int) -> int:
    """Rows in the whole batch."""
    return n_rows if self.axis_names is None else n_rows * jax.lax.psum(1, self.axis_names)


def _estimate(r_s: jax.Array, groups: _Groups, estimator: str, *, eps: float = 1e-6,
              std_ddof: int = 1) -> jax.Array:
  """The advantages of the rows `r_s` (a device's rows inside shard_map, or all of them).

  A group whose rewards are all equal gets exactly 0 under every estimator: its mean, in float, need
  not equal its rewards (a sum of six 0.2s, or a compiler's multiply-by-1/6), and a residue of 1e-8
  divided by a std of the same size would not be 0."""
  g = groups.size
  if estimator == "rloo":
    adv = r_s - (groups.sum(r_s) - r_s) / (g - 1)
  else:
    centered = r_s - groups.sum(r_s) / g
    if estimator == "dr_grpo":
      adv = centered
    elif estimator == "grpo":
      adv = centered / (jnp.sqrt(groups.sum(jnp.square(centered)) / (g - std_ddof)) + eps)
    else:  # "batch_std": the mean subtracted is still the group's
      n = groups.count(r_s.shape[0])
      dev = r_s - groups.total(r_s) / n
      adv = centered / (jnp.sqrt(groups.total(jnp.square(dev)) / (n - std_ddof)) + eps)
  return jnp.where(groups.spread(r_s) > 0, adv, 0.0)


def _check_options(estimator: str, group_size: int, num_rewards: int, eps: float, std_ddof: int) -> None:
  if estimator not in ADVANTAGE_ESTIMATORS:
    raise ValueError(f"Unknown advantage estimator {estimator!r}; valid: {sorted(ADVANTAGE_ESTIMATORS)}.")
  if eps < 0:
    raise ValueError(f"eps must be >= 0, got {eps}.")
  if std_ddof not in (0, 1):
    raise ValueError(f"std_ddof must be 0 or 1, got {std_ddof}.")
  if estimator == "rloo" and group_size < 2:
    raise ValueError(f"RLOO needs group_size >= 2, got {group_size}.")
  if estimator == "grpo" and group_size <= std_ddof:
    raise ValueError(f"scale='group' with std_ddof={std_ddof} needs group_size > {std_ddof}.")
  if estimator == "batch_std" and num_rewards <= std_ddof:
    raise ValueError(f"scale='batch' with std_ddof={std_ddof} needs > {std_ddof} rewards.")


def group_advantages(
    rewards_s: jax.Array,
    group_size: int,
    *,
    scale: str = "group",
    eps: float = 1e-6,
    std_ddof: int = 1,
) -> jax.Array:
  """Group-relative advantages: reward minus its group mean, optionally divided by a std.

  Args:
    rewards_s: f32[S] scalar rewards, S = B*G, the G samples of each prompt contiguous.
    group_size: G, samples per prompt.
    scale: "group" (GRPO: divide by the group's std), "batch" (Lite-PPO: divide by the std of
      all S rewards; the mean subtracted is still the group's) or "none" (Dr.GRPO: no division).
    eps: added to the std before dividing; a zero-variance group gets advantage 0, not NaN.
    std_ddof: delta degrees of freedom of the std: 1 = sample std (TRL, verl, Tunix; default),
      0 = population std. Ignored when scale="none".

  Returns:
    adv_s: f32[S] advantages, in the input order.
  """
  if scale not in SCALES:
    raise ValueError(f"Unknown scale {scale!r}; valid: {SCALES}.")
  estimator = {"group": "grpo", "batch": "batch_std", "none": "dr_grpo"}[scale]
  r_s = _check_rewards(rewards_s, group_size)
  _check_options(estimator, group_size, r_s.shape[0], eps, std_ddof)
  return _estimate(r_s, _Groups(group_size), estimator, eps=eps, std_ddof=std_ddof)


def rloo_advantages(rewards_s: jax.Array, group_size: int) -> jax.Array:
  """REINFORCE leave-one-out: A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_g).

  Args:
    rewards_s: f32[S] rewards, S = B*G, groups contiguous.
    group_size: G >= 2.

  Returns:
    adv_s: f32[S].
  """
  r_s = _check_rewards(rewards_s, group_size)
  _check_options("rloo", group_size, r_s.shape[0], 0.0, 1)
  return _estimate(r_s, _Groups(group_size), "rloo")


def sharded_advantages(rewards_s: jax.Array, group_size: int, estimator: str = "grpo", *, mesh=None,
                       axes: tuple[str, ...] = ("data", "fsdp"), eps: float = 1e-6,
                       std_ddof: int = 1) -> jax.Array:
  """Advantages of rewards split over the mesh `axes`, computed where they lie (call it inside jit).

  Each device computes its own rows' advantages in `jax.shard_map`, with `jax.lax` collectives over
  `axes`: none for group statistics when every device holds whole groups; psums (and the pmax/pmin
  that find zero-variance groups) of B floats when a group is split across devices; a psum for the
  batch std (see `_Groups`). Without a mesh, or
  when `axes` span one device, it is the one-device computation.

  Args:
    rewards_s: f32[S] rewards, S = B*G, each prompt's G samples contiguous, split over `axes` in
      contiguous blocks (the batch sharding of r1jax.sharding.batch_sharding).
    group_size: G.
    estimator: a name in ADVANTAGE_ESTIMATORS.
    mesh: the device mesh (None: one device).
    axes: the mesh axes the rows are split over (the `batch` rule of the rules table).
    eps, std_ddof: as in group_advantages (ignored by dr_grpo and rloo).

  Returns:
    adv_s: f32[S], sharded like the rewards.
  """
  r_s = _check_rewards(rewards_s, group_size)
  _check_options(estimator, group_size, r_s.shape[0], eps, std_ddof)
  axes = tuple(a for a in axes if mesh is not None and mesh.shape[a] > 1)
  if not axes:
    return _estimate(r_s, _Groups(group_size), estimator, eps=eps, std_ddof=std_ddof)
  n_dev = math.prod(mesh.shape[a] for a in axes)
  if r_s.shape[0] % n_dev:
    raise ValueError(f"{r_s.shape[0]} rewards do not split over the {n_dev} devices of mesh axes {axes}")
  spec = P(axes)
  fn = functools.partial(_estimate, groups=_Groups(group_size, axes), estimator=estimator, eps=eps,
                         std_ddof=std_ddof)
  return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec)(r_s)


def zero_variance_groups(rewards_s: jax.Array, group_size: int, *, atol: float = 0.0) -> jax.Array:
  """Flags groups whose G rewards are all equal (max - min <= atol).

  Such groups carry zero advantage under every estimator above, hence zero policy gradient;
  DAPO's dynamic sampling (arXiv 2503.14476: keep a group only if 0 < #correct < G) drops them and
  samples more prompts.

  Args:
    rewards_s: f32[S] rewards, S = B*G, groups contiguous.
    group_size: G.
    atol: tolerance on max - min; 0 compares exactly, right for discrete rule rewards.

  Returns:
    bool[B], True where the group has zero variance.
  """
  r_bg = _grouped(rewards_s, group_size)
  return (r_bg.max(axis=-1) - r_bg.min(axis=-1)) <= atol


def _grpo(rewards_s, group_size, **kw):
  return group_advantages(rewards_s, group_size, scale="group", **kw)


def _batch_std(rewards_s, group_size, **kw):
  return group_advantages(rewards_s, group_size, scale="batch", **kw)


def _dr_grpo(rewards_s, group_size, **kw):
  return group_advantages(rewards_s, group_size, scale="none", **kw)


# name -> fn(rewards_s, group_size, **kwargs) -> adv_s.  Configs pick one by name.
ADVANTAGE_ESTIMATORS: dict[str, Callable[..., jax.Array]] = {
    "grpo": _grpo,
    "batch_std": _batch_std,
    "dr_grpo": _dr_grpo,
    "rloo": rloo_advantages,
}


def get_advantage_fn(name: str) -> Callable[..., jax.Array]:
  """Looks up an estimator in ADVANTAGE_ESTIMATORS; ValueError listing the names if unknown."""
  try:
    return ADVANTAGE_ESTIMATORS[name]
  except KeyError:
    raise ValueError(
        f"Unknown advantage estimator {name!r}; valid: {sorted(ADVANTAGE_ESTIMATORS)}.") from None
