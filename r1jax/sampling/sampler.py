"""Batched autoregressive sampling with a KV cache: prefill each prompt once, decode G samples per prompt.

    out = sample(cfg, variables, prompt_tokens_bp, prompt_mask_bp, rng=jax.random.key(0), num_samples=8,
                 max_new_tokens=64, temperature=1.0, eos_id=tok.eos_id, stop_ids=tok.stop_ids)
    out.tokens      # int32[B*G, N]  rows b*G .. b*G+G-1 are prompt b's samples
    out.logprobs    # f32[B*G, N]    log pi(token) under the temperature-scaled full distribution

One program: the sampler calls the same `apply_model` with the same parameters as the GRPO
update, so the update's recomputed log-probs equal the sampler's to float tolerance (tested).

How it runs (all of it one `jax.jit`, compiled once per (cfg, shapes, static options, mesh)):
  1. prefill: the left-padded prompts [B, P] run once through the model into a cache of exactly
     P + N - 1 slots (the N-th sampled token is never fed back), keeping the last position's logits;
  2. the cache and those logits are repeated G times (row b -> rows b*G .. b*G+G-1), so the prompt's
     keys are computed once, not G times;
  3. one `jax.lax.while_loop` samples a token, feeds it back through the model (one token per row,
     MLA in its absorbed form against the cached latent) and stops as soon as every row has finished
     or N tokens were drawn. No Python runs per token.

Sampling semantics (the order is Hugging Face's: temperature, then top-k, then top-p):
  * greedy=True or temperature == 0: argmax; log-probs are log_softmax(logits) at T = 1.
  * otherwise logits / T, restricted to the top_k largest (top_k = 0: all) and then to the smallest
    set whose probability reaches top_p (top_p = 1: all; only top_p < 1 sorts, and after top-k only
    the k kept values), then one draw per row by inverse-CDF sampling (see _inverse_cdf_sample).
  * log-probs are ALWAYS log_softmax(logits / T) of the full distribution, not renormalised over the
    top-k / top-p cut: that is the policy the GRPO update recomputes (the cut is a sampling
    heuristic, not part of pi_theta).
  * A row finishes at its first token in {eos_id} | stop_ids. That token is part of the completion
    (mask 1, counted in `lengths`, log-prob kept): the policy chose to stop, and the update must credit
    that choice. Everything after it is pad_id with mask 0 and log-prob 0. A row that draws N tokens
    without a stop token is `truncated`.
  * Each step's randomness is fold_in(rng, step), drawn for all rows at once: a run is reproducible
    from rng, and the same on any mesh.

Decode steps run with a Runtime (r1jax.model.runtime) picked for B*G-token steps from the caller's
(`decode_moe_impl`, see _decode_runtime). On one CPU device (float32) the routed experts and MLA's
absorbed attention run as the hand-written kernels of r1jax.kernels.cpu (XLA FFI custom calls: only the
chosen experts, only the unmasked cache slots); elsewhere, or with decode_moe_impl set explicitly,
XLA's dense or sorted dispatch. The prefill uses the caller's runtime, or the dense dispatch for short
prompts (_prefill_runtime). Every choice computes the same sums (in another order), so it changes speed
only: the log-prob test compares against `forward` with the kernels and without.

Measured on the bench preset (benchmarks/sampler.py: 8 prompts x 8 samples x 64 new tokens, 2-core
CPU whose speed drifts): 11,100-12,600 generated tokens/s, 5.7-7.6x transformers' `generate` in the
same run (README.md). With the kernels a decode step (64 rows) takes ~4.5-5 ms, ~0.6x of the XLA-only
step (paired runs); without them the three MoE layers' all-experts matmuls take ~40% of a 9-12 ms step
and MLA attention ~25% (tiny per-row batched matmuls).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.kernels import cpu as cpu_kernels
from r1jax.model.cache import init_cache, repeat_cache
from r1jax.model.config import ModelConfig
from r1jax.model.layers import constrain
from r1jax.model.runtime import DEFAULT, Runtime
from r1jax.model.transformer import apply_model
from r1jax.sharding.mesh import mesh_rules
from r1jax.sharding.rules import get_rules

DECODE_MOE_IMPLS = ("auto", "same", "dense", "sorted", "ragged", "kernel")


class SampleOutput(NamedTuple):
  """Completions of B prompts x G samples; S = B*G rows, row b*G + g is sample g of prompt b."""
  tokens: jax.Array      # int32[S, N] sampled ids; pad_id after the stop token and past an early exit
  logprobs: jax.Array    # f32[S, N] log_softmax(logits / T)[token] (greedy: T = 1); 0 where mask is 0
  mask: jax.Array        # int32[S, N] 1 for completion tokens, the stop token included; 0 after it
  lengths: jax.Array     # int32[S] number of completion tokens (= mask.sum(-1))
  truncated: jax.Array   # bool[S] drew max_new_tokens without a stop token


@dataclasses.dataclass(frozen=True)
class _Options:
  """Static (compile-time) sampling options: each distinct value compiles its own program.

  Temperature, top_p's value and the stop ids are traced arguments instead, so changing them (an eval
  at another temperature, another tokenizer's eos) reuses the compiled program.
  """
  num_samples: int
  max_new_tokens: int
  greedy: bool
  top_k: int            # 0 = off (already clamped to the vocabulary)
  use_top_p: bool       # top_p < 1: the only case that needs a sort
  pad_id: int
  decode_runtime: Runtime   # how decode steps run (see _decode_runtime)
  prefill_runtime: Runtime  # how the prefill runs (see _prefill_runtime)


# ------------------------------------------------------------------------------------------ token choice
def _filter_logits(scaled_sv: jax.Array, top_p: jax.Array, opts: _Options) -> jax.Array:
  """Sets logits outside the top-k / top-p set to -inf (ties with the cut-off value are kept)."""
  neg_inf = jnp.array(-jnp.inf, scaled_sv.dtype)
  if opts.top_k:
    # lax.top_k returns the k largest sorted descending: it also gives top-p its sorted values, so
    # top-k + top-p sorts k values instead of the whole vocabulary.
    sorted_sk = jax.lax.top_k(scaled_sv, opts.top_k)[0]
    scaled_sv = jnp.where(scaled_sv < sorted_sk[:, -1:], neg_inf, scaled_sv)
  elif opts.use_top_p:
    sorted_sk = -jnp.sort(-scaled_sv, axis=-1)
  if opts.use_top_p:
    probs = jax.nn.softmax(sorted_sk, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # Keep a token while the mass strictly before it is < top_p: the most likely token always stays.
    num_keep = jnp.sum(mass_before < top_p, axis=-1, keepdims=True)
    threshold = jnp.take_along_axis(sorted_sk, num_keep - 1, axis=-1)
    scaled_sv = jnp.where(scaled_sv < threshold, neg_inf, scaled_sv)
  return scaled_sv


def _inverse_cdf_sample(key: jax.Array, logits_sv: jax.Array) -> jax.Array:
  """Draws one token per row from softmax(logits_sv) (-inf entries have probability 0).

  Inverse-CDF sampling needs one uniform per row, where `jax.random.categorical` (Gumbel-max) draws one
  per vocabulary entry: at S=64, V=1024 generating those 65k numbers cost ~2.5 ms per step on the
  2-core CPU, about as much as a decoder layer. The CDF is taken in two levels (blocks of ~sqrt(V)
  entries, then within the chosen block) with small triangular matmuls: XLA:CPU's cumsum over V=1024
  alone cost ~0.6 ms. Row s picks the first index whose cumulative mass exceeds u * total,
  u ~ U[0, 1); an entry of zero mass never satisfies that, so cut tokens are never drawn.
  """
  s, v = logits_sv.shape
  # Full f32 matmuls: TPUs would otherwise round these sums through bf16.
  cumsum = lambda x, n: jnp.matmul(x, jnp.triu(jnp.ones((n, n), x.dtype)), precision=jax.lax.Precision.HIGHEST)
  block = max(8, int(math.ceil(math.sqrt(v))))
  nb = -(-v // block)
  probs = jnp.exp(logits_sv - jnp.max(logits_sv, axis=-1, keepdims=True))
  probs = jnp.pad(probs, ((0, 0), (0, nb * block - v))).reshape(s, nb, block)
  mass_sb = jnp.sum(probs, axis=-1)                                         # [S, nb]
  cdf_sb = cumsum(mass_sb, nb)                                              # inclusive cumsum
  u = jax.random.uniform(key, (s, 1), probs.dtype) * cdf_sb[:, -1:]
  # First block whose cumulative mass exceeds u (zero-mass blocks repeat the previous value: skipped).
  b = jnp.minimum(jnp.sum(cdf_sb <= u, axis=-1), nb - 1)
  before = jnp.take_along_axis(cdf_sb, b[:, None], axis=-1) - jnp.take_along_axis(mass_sb, b[:, None], axis=-1)
  inner = jnp.take_along_axis(probs, b[:, None, None], axis=1)[:, 0]       # [S, block]
  cdf_inner = cumsum(inner, block)
  j = jnp.sum(cdf_inner <= (u - before), axis=-1)
  # Rounding between the two levels can push j one past the block's last entry of non-zero mass.
  last = jnp.max(jnp.where(inner > 0, jnp.arange(block), 0), axis=-1)
  return (b * block + jnp.minimum(j, last)).astype(jnp.int32)


def _choose(logits_sv: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array,
            opts: _Options) -> tuple[jax.Array, jax.Array]:
  """One token per row and its log-prob under the (temperature-scaled) full distribution.

  Args:
    logits_sv: f32[S, V] next-token logits.
    key: PRNG key for this step.
    temperature: f32[] (unused when greedy).
    top_p: f32[] nucleus mass (used only when opts.use_top_p).

  Returns:
    token_s int32[S], logp_s f32[S].
  """
  logits_sv = logits_sv.astype(jnp.float32)
  if opts.greedy:
    token = jnp.argmax(logits_sv, axis=-1).astype(jnp.int32)
    logp_sv = jax.nn.log_softmax(logits_sv, axis=-1)
  else:
    scaled = logits_sv / temperature
    logp_sv = jax.nn.log_softmax(scaled, axis=-1)
    token = _inverse_cdf_sample(key, _filter_logits(scaled, top_p, opts))
  return token, jnp.take_along_axis(logp_sv, token[:, None], axis=-1)[:, 0]


def _is_stop(token: jax.Array, stop_k: jax.Array) -> jax.Array:
  """bool[...]: token is one of the K stop ids (K may be 0)."""
  return jnp.any(token[..., None] == stop_k, axis=-1)


# ------------------------------------------------------------------------------------------ the program
def _sample_program(variables, prompt_bp, mask_bp, rng, temperature, top_p, stop_k, *, cfg: ModelConfig,
                    opts: _Options, mesh, rules):
  """The jitted body of `sample` (see there); traced under `mesh_rules(mesh, rules)`.

  `mesh` and `rules` are static arguments so that jit's cache keys on them: flax reads the logical-axis
  rules at trace time, which jit's cache does not see.
  """
  b, p = prompt_bp.shape
  g, n = opts.num_samples, opts.max_new_tokens
  s = b * g

  # 1. Prefill [B, P] once. The cache has P + N - 1 slots: N - 1 sampled tokens are fed back, the
  # N-th is not. When B prompts do not divide over the data axes (but the B*G rows do), the prefill
  # runs replicated: GSPMD cannot split 2 prompts over 8 devices.
  with contextlib.ExitStack() as stack:
    if mesh is not None and b % _data_parallelism(mesh, rules):
      stack.enter_context(nn.logical_axis_rules(_replicated_batch(rules)))
    prompt_bp = constrain(prompt_bp.astype(jnp.int32), ("batch", "seq"))
    mask_bp = constrain(mask_bp.astype(jnp.int32), ("batch", "seq"))
    cache = init_cache(cfg, b, p + n - 1)
    out = apply_model(cfg, variables, prompt_bp, attention_mask=mask_bp, cache=cache, last_only=True,
                      runtime=opts.prefill_runtime)
  # 2. Share the prompt's cache among its G samples: row b -> rows b*G .. b*G+G-1.
  cache = _constrain_cache(repeat_cache(out.cache, g))
  logits_sv = constrain(jnp.repeat(out.logits[:, -1], g, axis=0), ("batch", "vocab"))

  # 3. Decode. Step 0 samples from the prefill logits; step i >= 1 first feeds token i-1 back.
  decode_rt = opts.decode_runtime
  relayout = _decode_weight_layout(cfg, decode_rt)
  decode_variables = relayout[0](variables) if relayout else variables

  def sample_step(i, logits_sv, done_s, tokens_sn, logp_sn):
    token, logp = _choose(logits_sv, jax.random.fold_in(rng, i), temperature, top_p, opts)
    token = jnp.where(done_s, opts.pad_id, token)
    tokens_sn = jax.lax.dynamic_update_slice(tokens_sn, token[:, None], (0, i))
    logp_sn = jax.lax.dynamic_update_slice(logp_sn, jnp.where(done_s, 0.0, logp)[:, None], (0, i))
    return token, done_s | _is_stop(token, stop_k), tokens_sn, logp_sn

  tokens_sn = constrain(jnp.full((s, n), opts.pad_id, jnp.int32), ("batch", None))
  logp_sn = constrain(jnp.zeros((s, n), jnp.float32), ("batch", None))
  done_s = constrain(jnp.zeros((s,), bool), ("batch",))
  token_s, done_s, tokens_sn, logp_sn = sample_step(0, logits_sv, done_s, tokens_sn, logp_sn)

  def cond(carry):
    i, _, _, done_s, _, _ = carry
    return (i < n) & ~jnp.all(done_s)

  def body(carry):
    i, cache, token_s, done_s, tokens_sn, logp_sn = carry
    # Finished rows still run (static shapes) but as padding tokens: the sparse MoE dispatches skip
    # them, their cache slot stays invalid, and their outputs are discarded.
    step_variables = relayout[1](decode_variables) if relayout else decode_variables
    step = apply_model(cfg, step_variables, token_s[:, None], cache=cache, last_only=True,
                       attention_mask=(~done_s)[:, None].astype(jnp.int32), runtime=decode_rt)
    token_s, done_s, tokens_sn, logp_sn = sample_step(i, step.logits[:, -1], done_s, tokens_sn, logp_sn)
    return i + 1, _constrain_cache(step.cache), token_s, done_s, tokens_sn, logp_sn

  carry = (jnp.ones((), jnp.int32), cache, token_s, done_s, tokens_sn, logp_sn)
  _, _, _, _, tokens_sn, logp_sn = jax.lax.while_loop(cond, body, carry)

  # 4. Completion mask: a token counts if no stop token came strictly before it (the stop token itself
  # counts). Columns never reached (early exit) hold pad_id after every row's stop: masked.
  stop_sn = _is_stop(tokens_sn, stop_k).astype(jnp.int32)
  mask_sn = (jnp.cumsum(stop_sn, axis=-1) - stop_sn == 0).astype(jnp.int32)
  lengths = jnp.sum(mask_sn, axis=-1, dtype=jnp.int32)
  truncated = jnp.sum(stop_sn * mask_sn, axis=-1) == 0
  return SampleOutput(tokens_sn, logp_sn, mask_sn, lengths, truncated)


def _mlp_widths(cfg: ModelConfig) -> list[int]:
  """Hidden widths of cfg's dense SwiGLU MLPs: dense layers, shared experts."""
  widths = [cfg.intermediate_size] if not cfg.is_moe or cfg.first_k_dense_replace > 0 else []
  if cfg.is_moe and cfg.n_shared_experts:
    widths.append(cfg.moe_intermediate_size * cfg.n_shared_experts)
  return widths


def _map_mlp_weights(variables, names, fn, ndim=3):
  """Applies fn to the `ndim`-D weights called `names` under "mlp" modules (routed experts: 3-D; dense
  MLPs and shared experts: 2-D)."""
  def visit(path, x):
    keys = [getattr(k, "key", None) for k in path]
    if keys[-1] in names and "mlp" in keys and x.ndim == ndim:
      return fn(x)
    return x
  return jax.tree_util.tree_map_with_path(visit, variables)


def _decode_weight_layout(cfg: ModelConfig, decode_rt: Runtime):
  """(before, inside): MLP weights are laid out for the decode dispatch once, before the loop (`before`,
  behind an optimization barrier so the pair cannot cancel), and read back in their own shape inside it
  (`inside`, which XLA folds into the consumer as a free bitcast). XLA:CPU does not hoist such layout
  copies out of a while loop itself (1.5 ms of a 14 ms bench step for the dense dispatch; the CPU
  kernels' panel copies cost more). Only the memory layout changes, not the math.

    * moe_impl "dense" contracts x [T, D] with gate/up [E, D, F] as one [D, E*F] matrix: gate/up as [D, E, F].
    * moe_impl "kernel": the routed experts' weights in column panels (r1jax.kernels.cpu.panels), 3-D -> 4-D.
    * mlp_impl "kernel": the dense MLPs' weights likewise, as one expert, 2-D -> 3-D.
  """
  names = ("gate_proj", "up_proj", "down_proj")
  maps = []   # (weight names, ndim before, layout fn, ndim after, inverse fn)
  k = decode_rt.kernels
  if cfg.is_moe and decode_rt.moe_impl == "dense":
    swap = lambda w: jnp.transpose(w, (1, 0, 2))
    maps.append((names[:2], 3, swap, 3, swap))
  if cfg.is_moe and decode_rt.moe_impl == "kernel":
    maps.append((names, 3, k.panels, 4, k.unpanels))
  if decode_rt.mlp_impl == "kernel":
    maps.append((names, 2, lambda w: k.panels(w[None])[0], 3, lambda w: k.unpanels(w[None])[0]))
  if not maps:
    return None

  def before(variables):
    for n, nd, to, _, _ in maps:
      variables = _map_mlp_weights(variables, n, to, nd)
    return jax.lax.optimization_barrier(variables)

  def inside(variables):   # in reverse: a later map's layout never has the ndim an earlier map looks for
    for n, _, _, nd, back in reversed(maps):
      variables = _map_mlp_weights(variables, n, back, nd)
    return variables

  return before, inside


def _constrain_cache(cache: dict) -> dict:
  """Pins the cache's rows to the data axes (a no-op without a mesh)."""
  layers = jax.tree.map(lambda x: constrain(x, ("batch",) + (None,) * (x.ndim - 1)), cache["layers"])
  return {"layers": layers, "key_mask": constrain(cache["key_mask"], ("batch", None)), "index": cache["index"]}


def _table(rules) -> tuple:
  return get_rules(rules) if isinstance(rules, str) else tuple(rules)


def _data_parallelism(mesh, rules) -> int:
  """How many ways the `batch` logical axis is split on `mesh` under `rules`."""
  axes = dict(_table(rules)).get("batch")
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def _replicated_batch(rules) -> tuple:
  return tuple((name, None if name == "batch" else axes) for name, axes in _table(rules))


# Compiled once per (cfg, options, mesh, rules, input shapes and shardings) and then reused. Nothing is
# donated: the one large buffer, the KV cache, is created inside the program (XLA updates it in place
# in the loop), the outputs are new, and variables must outlive the call.
_sample_jit = jax.jit(_sample_program, static_argnames=("cfg", "opts", "mesh", "rules"))


# ------------------------------------------------------------------------------------------ validation
def _fail(name: str, value, why: str):
  raise ValueError(f"sample(): {name}={value!r} {why}")


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_concrete(x) -> bool:
  """True for host data and fully addressable device arrays: values we may read to validate."""
  if isinstance(x, jax.core.Tracer):
    return False
  return not isinstance(x, jax.Array) or x.is_fully_addressable


def _dense_costs_at_most_4x(cfg: ModelConfig) -> bool:
  """E <= 4k: the dense all-experts dispatch does at most 4x the routed FLOPs (the rule both the decode
  steps and the prefill use to consider it)."""
  return cfg.n_routed_experts <= 4 * cfg.num_experts_per_tok


def _decode_runtime(cfg: ModelConfig, runtime: Runtime, impl: str, num_rows: int,
                    one_cpu: bool = False) -> Runtime:
  """The runtime of decode steps: the caller's `runtime`, with the MoE dispatch (and, for "auto", the
  attention and MLPs) chosen for steps of num_rows tokens.

  "auto":
    * On one CPU device (`one_cpu`), for a float32 cfg, when r1jax.kernels.cpu builds here: MLA's
      absorbed attention and a dropless sorted runtime's routed experts run as the CPU kernels
      (attention_impl / moe_impl "kernel"): only the unmasked cache slots and the chosen experts,
      outside XLA's matmuls, which run these tiny per-step problems far below the machine's rate.
    * Otherwise, for a dropless sorted runtime, "dense" when E <= 4k (at most 4x the routed FLOPs): a decode
      step routes only B*G tokens, and there one big matmul over all experts beats sorting into
      per-expert blocks and gathering a copy of the expert weights for every block. Bench config (E=8,
      k=2, 64 rows), whole decode loop, same process: 12.0-13.2 ms/step dense vs 14.7-16.3 sorted with
      16-row blocks and 16.4-19.0 with cfg's automatic 8-row blocks.
    * Otherwise "sorted" with blocks of one balanced expert load, num_rows * k / E rows (a power of two
      in [8, 256]); the automatic size of training (the same rule, up to 512 rows) is meant for long
      prefill/training batches.
  "same" keeps the caller's runtime; any other value sets only moe_impl ("kernel": r1jax.kernels.cpu).
  A capacity-limited runtime (which drops tokens by design) keeps its dispatch.
  """
  if impl not in DECODE_MOE_IMPLS:
    _fail("decode_moe_impl", impl, f"must be one of {DECODE_MOE_IMPLS}")
  if impl == "kernel" and not one_cpu:
    _fail("decode_moe_impl", impl, "runs on one CPU device only (no mesh, CPU backend)")
  if impl == "same":
    return runtime
  rt = runtime
  kernels = (impl == "auto" and one_cpu and (cfg.dtype, cfg.param_dtype) == ("float32", "float32")
             and cpu_kernels.available())
  if kernels and cfg.attention == "mla":
    rt = rt.replace(attention_impl="kernel", kernels=cpu_kernels)
  mlp_kernel = kernels and all(cpu_kernels.supports_experts(cfg.hidden_size, w) for w in _mlp_widths(cfg))
  if not cfg.is_moe:
    return rt.replace(mlp_impl="kernel", kernels=cpu_kernels) if mlp_kernel else rt
  if rt.capacity_factor > 0:
    return rt
  if impl != "auto":
    return rt.replace(moe_impl=impl, kernels=cpu_kernels if impl == "kernel" else rt.kernels)
  if rt.moe_impl != "sorted":
    return rt
  if kernels and cpu_kernels.supports_experts(cfg.hidden_size, cfg.moe_intermediate_size):
    return rt.replace(moe_impl="kernel", mlp_impl="kernel" if mlp_kernel else "xla", kernels=cpu_kernels)
  if _dense_costs_at_most_4x(cfg):
    return rt.replace(moe_impl="dense")
  if rt.moe_block_size:
    return rt
  load = num_rows * cfg.num_experts_per_tok / cfg.n_routed_experts
  block = int(min(256, max(8, 1 << max(0, math.ceil(load) - 1).bit_length())))
  return rt.replace(moe_block_size=block)


# A prefill switches to the dense dispatch while one balanced expert load (rows * k / E) is at most this
# many rows: per-expert blocks that small run far below the CPU's matmul rate (bench prefill, 256
# rows, load 64: the whole `sample` 4.5% faster, median of 10 paired runs).
PREFILL_DENSE_MAX_LOAD = 64


def _prefill_runtime(cfg: ModelConfig, runtime: Runtime, num_rows: int) -> Runtime:
  """The runtime of the prefill (num_rows = B * P tokens): the caller's, or the dense dispatch for short
  prompts.

  Dense when the runtime is a dropless "sorted" one, cfg an MoE with E <= 4k (at most 4x the routed
  FLOPs, as for decode steps) and a balanced expert load at most PREFILL_DENSE_MAX_LOAD rows. Same
  sums, so this changes speed only.
  """
  if not cfg.is_moe or runtime.moe_impl != "sorted" or runtime.capacity_factor > 0:
    return runtime
  load = num_rows * cfg.num_experts_per_tok / cfg.n_routed_experts
  if _dense_costs_at_most_4x(cfg) and load <= PREFILL_DENSE_MAX_LOAD:
    return runtime.replace(moe_impl="dense")
  return runtime


def _stop_array(ids) -> jax.Array:
  """int32[K]: the unique stop ids padded with -1 (never a token) to K = 4, 8, 16, ...: one compiled
  program serves eos_id=None, a single eos and a tokenizer's few stop ids alike."""
  unique = sorted({int(t) for t in ids})
  size = max(4, 1 << max(0, len(unique) - 1).bit_length())
  return jnp.asarray(unique + [-1] * (size - len(unique)), jnp.int32)


# ------------------------------------------------------------------------------------------ API
def sample(cfg: ModelConfig, variables, prompt_tokens, prompt_mask, *, rng, num_samples: int = 1,
           max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           eos_id: int | None, stop_ids: Sequence[int] = (), pad_id: int = 0, greedy: bool = False,
           max_len: int | None = None, mesh=None, rules="fsdp_tp", runtime: Runtime | None = None,
           decode_moe_impl: str = "auto") -> SampleOutput:
  """Samples `num_samples` completions for each of B left-padded prompts (see the module docstring).

  Args:
    cfg: the model's architecture.
    variables: the model variables from `init_variables` / r1jax.hf (sharded on `mesh` when one is given).
    prompt_tokens: int[B, P] prompts, LEFT-padded to a common length P (the last column is real).
    prompt_mask: int/bool[B, P] 1 for real prompt tokens.
    rng: a PRNG key (jax.random.key or PRNGKey); unused when greedy.
    num_samples: G completions per prompt (GRPO group size, pass@k's k).
    max_new_tokens: N, the token budget of every completion.
    temperature: T >= 0; 0 means greedy.
    top_k: sample among the k most likely tokens (0 = no limit).
    top_p: nucleus mass in (0, 1] (1 = no limit).
    eos_id: end-of-sequence id, or None (then only stop_ids and the budget end a row).
    stop_ids: further ids that end a row (e.g. a tokenizer's stop_ids; may repeat eos_id).
    pad_id: id written after a row's stop token.
    greedy: argmax decoding (same as temperature=0); log-probs are then reported at T = 1.
    max_len: optional bound on P + N (e.g. the training context); cfg.max_position_embeddings always is.
    mesh: a device mesh (r1jax.sharding.make_mesh); rows are split over the data axes.
    rules: the logical-axis rules table used with `mesh`.
    runtime: how the model runs (r1jax.model.runtime); None = the default. The prefill and the decode
      steps start from it (see decode_moe_impl).
    decode_moe_impl: MoE dispatch of decode steps: "auto" (see _decode_runtime), "same" (`runtime`'s),
      or a Runtime.moe_impl value. Dropless dispatches compute the same sums, so this changes speed
      only; a capacity-limited runtime (capacity_factor > 0) always keeps its own.

  Returns:
    SampleOutput: tokens int32[B*G, N], logprobs f32[B*G, N], mask int32[B*G, N], lengths int32[B*G],
    truncated bool[B*G]; rows b*G .. b*G+G-1 belong to prompt b.

  Raises:
    ValueError naming the argument: shapes of tokens/mask, no room for N tokens (P + N over
    cfg.max_position_embeddings or max_len), temperature < 0 or NaN, num_samples < 1,
    max_new_tokens < 1, top_p outside (0, 1], top_k < 0, stop ids outside the vocabulary, a prompt
    mask that is not left-padded (checked when the mask is a concrete array).
  """
  tok_shape, mask_shape = tuple(np.shape(prompt_tokens)), tuple(np.shape(prompt_mask))
  if len(tok_shape) != 2 or 0 in tok_shape:
    _fail("prompt_tokens.shape", tok_shape, "must be [batch, prompt_len] with both sizes >= 1")
  if mask_shape != tok_shape:
    _fail("prompt_mask.shape", mask_shape, f"must equal prompt_tokens.shape={tok_shape}")
  tok_dtype = getattr(prompt_tokens, "dtype", None) or np.asarray(prompt_tokens).dtype
  if not jnp.issubdtype(tok_dtype, jnp.integer):
    _fail("prompt_tokens.dtype", tok_dtype, "must be an integer type")
  for name, v in (("num_samples", num_samples), ("max_new_tokens", max_new_tokens)):
    if not _is_int(v) or v < 1:
      _fail(name, v, "must be a positive integer")
  if not _is_int(top_k) or top_k < 0:
    _fail("top_k", top_k, "must be an integer >= 0 (0 = no limit)")
  temperature, top_p = float(temperature), float(top_p)
  if not math.isfinite(temperature) or temperature < 0:
    _fail("temperature", temperature, "must be a finite number >= 0 (0 = greedy)")
  if not 0 < top_p <= 1:  # also rejects NaN
    _fail("top_p", top_p, "must be in (0, 1]")
  b, p = tok_shape
  total = p + int(max_new_tokens)
  for bound_name, bound in (("cfg.max_position_embeddings", cfg.max_position_embeddings), ("max_len", max_len)):
    if bound is not None and total > bound:
      _fail("max_new_tokens", max_new_tokens, f"leaves no room: prompt length {p} + {max_new_tokens} new "
            f"tokens = {total} > {bound_name}={bound}")
  ids = ([] if eos_id is None else [eos_id]) + list(stop_ids)
  for t in ids:
    if not _is_int(t) or not 0 <= t < cfg.vocab_size:
      _fail("eos_id" if t is eos_id else "stop_ids", t, f"must be token ids in [0, {cfg.vocab_size})")
  if not _is_int(pad_id):
    _fail("pad_id", pad_id, "must be an integer")
  if _is_concrete(prompt_mask):
    m = np.asarray(prompt_mask).astype(bool)
    bad = np.flatnonzero(np.any(m[:, :-1] & ~m[:, 1:], axis=-1))
    if bad.size:
      _fail(f"prompt_mask[{bad[0]}]", m[bad[0]].astype(int).tolist(),
            "must be left-padded: zeros (padding), then ones")

  greedy = bool(greedy) or temperature == 0.0
  runtime = DEFAULT if runtime is None else runtime.validate_for(cfg)
  one_cpu = jax.default_backend() == "cpu" and (mesh is None or mesh.devices.size == 1)
  opts = _Options(num_samples=int(num_samples), max_new_tokens=int(max_new_tokens), greedy=greedy,
                  top_k=0 if greedy else min(int(top_k), cfg.vocab_size), use_top_p=not greedy and top_p < 1,
                  pad_id=int(pad_id),
                  decode_runtime=_decode_runtime(cfg, runtime, decode_moe_impl, b * num_samples, one_cpu),
                  prefill_runtime=_prefill_runtime(cfg, runtime, b * p))
  stop_k = _stop_array(ids)
  args = (variables, prompt_tokens, prompt_mask, rng, jnp.float32(1.0 if greedy else temperature),
          jnp.float32(top_p), stop_k)
  if mesh is not None and (b * num_samples) % _data_parallelism(mesh, rules):
    _fail("num_samples", num_samples, f"gives {b} x {num_samples} rows, which do not divide over the "
          f"{_data_parallelism(mesh, rules)}-way data axes of the mesh")
  with mesh_rules(mesh, rules):
    return _sample_jit(*args, cfg=cfg, opts=opts, mesh=mesh, rules=rules)
