"""DeepSeekMoE: fp32 router, group-limited top-k, shared experts, and interchangeable expert dispatch.

Routing (DeepSeek-V3 technical report, section 2.1.2; transformers' DeepseekV3TopkRouter):
  scores = sigmoid(x W_r) in fp32 (or softmax for Qwen3-MoE / Mixtral);
  choice = scores + e_score_correction_bias (selection only: the bias never weights an expert);
  group-limited: keep the `topk_group` groups with the largest top-2 sum, mask the others with -inf (as
  transformers v5 and DeepSeek's reference do; v4.5x used 0.0, which lets a masked expert beat a chosen
  one whose biased score is negative);
  top-k of choice -> weights gathered from the *unbiased* scores -> normalise (+1e-20) -> x routed_scaling_factor.
  y = sum_k w_k Expert_k(x) + SharedExperts(x)   (shared experts unweighted).

Dispatch (`expert_mlp`), chosen by Runtime.moe_impl (r1jax.model.runtime), all equal when nothing is dropped:
  "dense"   every expert on every token, combined with the routing weights: the test oracle, cost ~ E.
  "sorted"  tokens sorted by expert. capacity_factor == 0 (dropless): each expert's rows are padded to a
            multiple of a block size and every block runs one batched einsum against its expert's weights
            (cost ~ k * tokens, plus at most one partial block per expert). capacity_factor > 0: a per-expert
            buffer [E, C, D] with C = ceil(cf * k * T / E) and one batched einsum; tokens over capacity drop.
  "ragged"  jax.lax.ragged_dot grouped matmuls (fast where the backend has a grouped-matmul kernel; on CPU
            XLA lowers it to work linear in E).
  "kernel"  the runtime's kernels.routed_experts, e.g. r1jax.kernels.cpu's hand-written C++ custom call
            that computes only the chosen experts (f32, one CPU device, forward only): what the sampler's
            decode steps use on a CPU, where XLA's matmuls are slow at ~16 rows per expert.
Padding tokens (token_mask == 0) are sent to a null expert by the sparse paths and never computed.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from r1jax.model.config import ModelConfig
from r1jax.model.layers import MLP, constrain, param, stack_gate_up, swiglu
from r1jax.model.runtime import DEFAULT, Runtime
from r1jax.sharding.rules import DEFAULT_RULES, get_rules


# ---------------------------------------------------------------------------------------------- routing
def top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k` over the last axis (same values, same indices, ties to the lower index) as k rounds
  of max / argmax. GSPMD partitions these reductions along the leading (token) axes; it does not
  partition lax.top_k, and all-gathers its operand over the data axes instead (18 all-gathers per decode
  step of the bench preset on a 2-way data mesh). k is small (2-8) and E is at most a few hundred, so
  the k passes over [T, E] cost little."""
  iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  values, indices = [], []
  for _ in range(k):
    values.append(jnp.max(x, axis=-1))
    j = jnp.argmax(x, axis=-1).astype(jnp.int32)
    indices.append(j)
    x = jnp.where(iota == j[..., None], -jnp.inf, x)
  return jnp.stack(values, -1), jnp.stack(indices, -1)


def route(x_td: jax.Array, router_de: jax.Array, bias_e: jax.Array | None, cfg: ModelConfig):
  """Chooses experts per token.

  Returns:
    idx_tk: int32[T, k] chosen experts; weights_tk: f32[T, k] routing weights; scores_te: f32[T, E]
    (sigmoid or softmax scores, unbiased; used by the sequence-wise balance loss).
  """
  e, k, ng = cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.n_group
  logits = jnp.einsum("TD,DE->TE", x_td.astype(jnp.float32), router_de.astype(jnp.float32))
  scores = jax.nn.sigmoid(logits) if cfg.scoring_func == "sigmoid" else jax.nn.softmax(logits, axis=-1)
  choice = scores if bias_e is None else scores + bias_e.astype(jnp.float32)[None]
  if ng > 1:
    per = e // ng
    grouped = choice.reshape(-1, ng, per)
    group_score = top_k(grouped, min(2, per))[0].sum(-1)                 # [T, ng]
    _, keep = top_k(group_score, cfg.topk_group)                         # [T, topk_group]
    group_mask = jax.nn.one_hot(keep, ng, dtype=jnp.float32).sum(-2)     # one-hot, not a scatter: partitions
    # -inf, not 0.0: a biased score can be negative, and a masked expert must never be chosen over it
    # (topk_group * per >= k is validated, so k finite candidates always remain).
    choice = jnp.where(jnp.repeat(group_mask, per, axis=-1) > 0, choice, -jnp.inf)
  _, idx = top_k(choice, k)
  weights = (jax.nn.one_hot(idx, e, dtype=scores.dtype) * scores[:, None, :]).sum(-1)   # exact: one nonzero
  if cfg.norm_topk_prob:
    weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
  return idx.astype(jnp.int32), weights * cfg.routed_scaling_factor, scores


def expert_counts(idx_tk: jax.Array, token_mask_t: jax.Array, num_experts: int) -> jax.Array:
  """f32[E]: real (unmasked) token-slots routed to each expert."""
  w = jnp.broadcast_to(token_mask_t.astype(jnp.float32)[:, None], idx_tk.shape)
  return jnp.zeros((num_experts,), jnp.float32).at[idx_tk.reshape(-1)].add(w.reshape(-1))


def update_router_bias(bias_e: jax.Array, counts_e: jax.Array, rate: float) -> jax.Array:
  """Auxiliary-loss-free balancing (DeepSeek-V3 eq. 16 ff.): bias += rate * sign(mean_load - load).

  Overloaded experts become less likely to be chosen, underloaded ones more; no gradient is involved.
  """
  counts = counts_e.astype(jnp.float32)
  return (bias_e.astype(jnp.float32) + rate * jnp.sign(counts.mean(-1, keepdims=True) - counts)).astype(bias_e.dtype)


def sequence_balance_loss(scores_bte: jax.Array, idx_btk: jax.Array, mask_bt: jax.Array) -> jax.Array:
  """DeepSeek-V3's complementary sequence-wise balance loss, without its alpha: mean over sequences of
  sum_i f_i P_i, f_i = E/(k T) * #{t: i in topk_t}, P_i = mean_t s_it / sum_j s_jt (T = real tokens)."""
  e, k = scores_bte.shape[-1], idx_btk.shape[-1]
  m = mask_bt.astype(jnp.float32)
  n_tok = jnp.maximum(m.sum(-1), 1.0)                                       # [B]
  sel = jax.nn.one_hot(idx_btk, e, dtype=jnp.float32).sum(-2) * m[..., None]   # [B, T, E]
  f = sel.sum(1) * e / (k * n_tok[:, None])
  s = scores_bte / (scores_bte.sum(-1, keepdims=True) + 1e-20)
  p = (s * m[..., None]).sum(1) / n_tok[:, None]
  return (f * p).sum(-1).mean()


# ---------------------------------------------------------------------------------------------- dispatch
def _dense(x_td, idx_tk, w_tk, token_mask_t, wg, wu, wd):
  t, e = x_td.shape[0], wg.shape[0]
  combine_te = (jax.nn.one_hot(idx_tk, e, dtype=jnp.float32) * w_tk[..., None]).sum(-2)   # idx distinct per row
  combine_te = combine_te * token_mask_t.astype(jnp.float32)[:, None]
  h_tef = jax.nn.silu(jnp.einsum("TD,EDF->TEF", x_td, wg)) * jnp.einsum("TD,EDF->TEF", x_td, wu)
  # Weighting before the down projection makes the combine part of one [T, E*F] x [E*F, D] matmul.
  h_tef = h_tef.astype(jnp.float32) * combine_te[:, :, None]
  return jnp.einsum("TEF,EFD->TD", h_tef, wd.astype(jnp.float32))


@jax.custom_vjp
def _gather_rows(x_nd, idx_m, inv_idx_n):
  """y[i] = x[idx[i]] (0 where idx[i] is out of range), for an injective `idx` whose inverse is `inv_idx`.

  Both directions are gathers: the gradient w.r.t. x is g[inv_idx] instead of the scatter-add JAX would
  derive, which XLA:CPU runs as a slow serial loop (MaxText sorts activations with a custom VJP too).
  """
  return jnp.take(x_nd, idx_m, axis=0, mode="fill", fill_value=0)


def _gather_rows_fwd(x_nd, idx_m, inv_idx_n):
  return _gather_rows(x_nd, idx_m, inv_idx_n), (idx_m, inv_idx_n)


def _gather_rows_bwd(res, g_md):
  idx_m, inv_idx_n = res
  return jnp.take(g_md, inv_idx_n, axis=0, mode="fill", fill_value=0), None, None


_gather_rows.defvjp(_gather_rows_fwd, _gather_rows_bwd)


@jax.custom_vjp
def _gather_experts(w_e, block_expert_n):
  """w[block_expert] for expert weights; the gradient sums blocks per expert with a one-hot matmul."""
  return w_e[block_expert_n]


def _gather_experts_fwd(w_e, block_expert_n):
  return w_e[block_expert_n], (block_expert_n, w_e.shape[0])


def _gather_experts_bwd(res, g_n):
  block_expert_n, e = res
  onehot = jax.nn.one_hot(block_expert_n, e, dtype=g_n.dtype)
  return jnp.einsum("NE,N...->E...", onehot, g_n), None


_gather_experts.defvjp(_gather_experts_fwd, _gather_experts_bwd)


def _slots(idx_tk, token_mask_t, e):
  """Sorts the T*k token-slots by expert (padding to a null expert `e`, last).

  Returns (e_flat int[T*k], order int[T*k] slots in expert order, counts int[E], rank_flat int[T*k]:
  each slot's position within its expert's group).
  """
  t, k = idx_tk.shape
  e_flat = jnp.where(token_mask_t[:, None] > 0, idx_tk, e).reshape(-1)
  order = jnp.argsort(e_flat, stable=True)
  counts = jnp.zeros((e + 1,), jnp.int32).at[e_flat].add(1)
  start = jnp.cumsum(counts) - counts
  inv_order = jnp.zeros((t * k,), jnp.int32).at[order].set(jnp.arange(t * k, dtype=jnp.int32))
  rank_flat = inv_order - start[e_flat]
  return e_flat, order, counts[:e], rank_flat


def _dispatch(x_td, k, row_of_slot, num_rows):
  """Rows [num_rows, D] of expert inputs: slot f (token f // k) goes to row row_of_slot[f] (>= num_rows:
  dropped). Returns (rows, slot_of_row) for the way back."""
  tk = row_of_slot.shape[0]
  slot_of_row = jnp.full((num_rows,), tk, jnp.int32).at[row_of_slot].set(
      jnp.arange(tk, dtype=jnp.int32), mode="drop")
  x_slots = jnp.repeat(x_td, k, axis=0)                                    # slot f holds token f // k
  return _gather_rows(x_slots, slot_of_row, row_of_slot), slot_of_row


def _combine(y_rows, row_of_slot, slot_of_row, w_tk):
  """Expert outputs back to slots [T, k, D], summed with the routing weights in fp32."""
  t, k = w_tk.shape
  y_slots = _gather_rows(y_rows, row_of_slot, slot_of_row)
  return jnp.einsum("TKD,TK->TD", y_slots.reshape(t, k, -1).astype(jnp.float32), w_tk)


def auto_block_size(num_rows: int, num_experts: int) -> int:
  """Rows per block for dropless sorted dispatch: one balanced expert's load (num_rows / E), a power of
  two in [8, 512].

  Big blocks make efficient batched matmuls (on 2 AVX2 cores a [B, 256] x [256, 256] block runs at ~15
  GFLOP/s for B = 64, ~40 for 128, ~70 for 256-512) and cost one partial block of padding per expert,
  most of which `_sorted_dropless` never computes (it skips the unused tail blocks).
  """
  target = max(1, num_rows // num_experts)
  return int(min(512, max(8, 2 ** int(math.floor(math.log2(target))))))


TAIL_CHUNKS = 8             # the dropless tail (blocks past the fewest a batch can need) runs in <= this many parts
TAIL_SKIP_MIN_ROWS = 1024   # smaller tails always run: a skip saves little there and each cond adds compile time


def _sorted_dropless(x_td, idx_tk, w_tk, token_mask_t, wg, wu, wd, block):
  """Each expert's rows padded to whole blocks; block n runs against expert block_expert[n]'s weights.

  The number of blocks in use, sum_e ceil(count_e / block), is only known at run time; the static shape
  holds the worst case, T*k/block + E more. The first ceil(T*k / block) blocks always run; the remaining
  (tail) blocks, when they hold TAIL_SKIP_MIN_ROWS rows or more, run in up to TAIL_CHUNKS chunks, each
  under a lax.cond that skips it (forward and backward) when none of its blocks is in use. Unused blocks
  hold no rows, so skipping them is exact.
  """
  t, k = idx_tk.shape
  e, d = wg.shape[0], x_td.shape[1]
  e_flat, _, counts, rank = _slots(idx_tk, token_mask_t, e)
  padded = (counts + block - 1) // block * block
  pend = jnp.cumsum(padded)
  pstart = jnp.concatenate([pend - padded, pend[-1:]])                      # null expert starts past the end
  rows = -(-(t * k + e * (block - 1)) // block) * block                     # static bound on padded rows
  row_of_slot = jnp.where(e_flat < e, pstart[e_flat] + rank, rows)
  x_rows, slot_of_row = _dispatch(x_td, k, row_of_slot, rows)
  nb = rows // block
  block_expert = jnp.minimum(jnp.searchsorted(pend, jnp.arange(nb) * block, side="right"), e - 1)
  w_gate_up = stack_gate_up(wg, wu)
  x_blocks = x_rows.reshape(nb, block, d)

  def run(xb, be, w_gate_up, wd):
    return swiglu(xb, _gather_experts(w_gate_up, be), _gather_experts(wd, be), "NBD,NDF->NBF", "NBF,NFD->NBD")

  def skip(xb, be, w_gate_up, wd):
    return jnp.zeros(xb.shape, jnp.result_type(xb, wd))

  head = min(nb, -(-t * k // block))                                        # blocks any batch may fill
  if (nb - head) * block < TAIL_SKIP_MIN_ROWS:
    head = nb
  parts = [run(x_blocks[:head], block_expert[:head], w_gate_up, wd)]
  used = pend[-1] // block                                                  # blocks holding rows
  chunk = max(1, -(-(nb - head) // TAIL_CHUNKS))
  for lo in range(head, nb, chunk):
    hi = min(nb, lo + chunk)
    parts.append(jax.lax.cond(lo < used, run, skip, x_blocks[lo:hi], block_expert[lo:hi], w_gate_up, wd))
  y_blocks = jnp.concatenate(parts, axis=0)
  return _combine(y_blocks.reshape(rows, d), row_of_slot, slot_of_row, w_tk)


def _sorted_capacity(x_td, idx_tk, w_tk, token_mask_t, wg, wu, wd, capacity):
  t, k = idx_tk.shape
  e, d = wg.shape[0], x_td.shape[1]
  e_flat, _, _, rank = _slots(idx_tk, token_mask_t, e)
  keep = (e_flat < e) & (rank < capacity)
  row_of_slot = jnp.where(keep, e_flat * capacity + rank, e * capacity)
  x_rows, slot_of_row = _dispatch(x_td, k, row_of_slot, e * capacity)
  buf = constrain(x_rows.reshape(e, capacity, d), ("expert", None, "act_embed"))
  y_buf = swiglu(buf, stack_gate_up(wg, wu), wd, "ECD,EDF->ECF", "ECF,EFD->ECD")
  dropped = jnp.sum((e_flat < e) & ~keep) / jnp.maximum(jnp.sum(e_flat < e), 1)
  return _combine(y_buf.reshape(e * capacity, d), row_of_slot, slot_of_row, w_tk), dropped


def _ragged(x_td, idx_tk, w_tk, token_mask_t, wg, wu, wd):
  t, k = idx_tk.shape
  e = wg.shape[0]
  e_flat, _, counts, rank = _slots(idx_tk, token_mask_t, e)
  start = jnp.cumsum(counts) - counts
  row_of_slot = jnp.where(e_flat < e, jnp.concatenate([start, jnp.zeros((1,), start.dtype)])[e_flat] + rank,
                          t * k)
  x_sorted, slot_of_row = _dispatch(x_td, k, row_of_slot, t * k)          # padding rows last, outside groups
  h = jax.nn.silu(jax.lax.ragged_dot(x_sorted, wg, counts)) * jax.lax.ragged_dot(x_sorted, wu, counts)
  y_sorted = jax.lax.ragged_dot(h, wd, counts)
  return _combine(y_sorted, row_of_slot, slot_of_row, w_tk)


def expert_mlp(x_td, idx_tk, w_tk, token_mask_t, wg_edf, wu_edf, wd_efd, *, impl: str,
               capacity_factor: float = 0.0, block_size: int = 0, kernels=None):
  """Routed-expert SwiGLU: y_t = sum_k w_tk Expert_{idx_tk}(x_t).

  impl, capacity_factor, block_size: see r1jax.model.runtime (moe_impl, capacity_factor, moe_block_size);
  kernels: what provides impl="kernel" (routed_experts).

  Returns:
    (y f32[T, D], dropped fraction f32[]) — dropped is 0 unless impl="sorted" with capacity_factor > 0.
  """
  t, k = idx_tk.shape
  e = wg_edf.shape[0]
  zero = jnp.zeros((), jnp.float32)
  if impl == "dense":
    return _dense(x_td, idx_tk, w_tk, token_mask_t, wg_edf, wu_edf, wd_efd), zero
  if impl == "kernel":
    if kernels is None:
      raise ValueError("expert_mlp(impl='kernel') needs kernels= (e.g. r1jax.kernels.cpu)")
    w = w_tk * token_mask_t.astype(w_tk.dtype)[:, None]
    return kernels.routed_experts(x_td, idx_tk, w, wg_edf, wu_edf, wd_efd), zero
  if impl == "ragged":
    return _ragged(x_td, idx_tk, w_tk, token_mask_t, wg_edf, wu_edf, wd_efd), zero
  if impl != "sorted":
    raise ValueError(f"unknown moe impl {impl!r}")
  if capacity_factor > 0:
    capacity = max(1, math.ceil(capacity_factor * t * k / e))
    return _sorted_capacity(x_td, idx_tk, w_tk, token_mask_t, wg_edf, wu_edf, wd_efd, capacity)
  block = block_size or auto_block_size(t * k, e)
  return _sorted_dropless(x_td, idx_tk, w_tk, token_mask_t, wg_edf, wu_edf, wd_efd, block), zero


# ---------------------------------------------------------------------------------------------- expert parallel
def _exchange_local(x_td, idx_tk, w_tk, token_mask_t, wg, wu, wd, *, axis, ep: int, capacity: int, block: int,
                    token_axes: tuple):
  """One device's part of the all-to-all dispatch (inside shard_map).

  x_td, idx_tk, w_tk, token_mask_t: this device's t tokens; wg/wu/wd: its E/ep local experts. Each
  token-slot goes to the expert shard idx // (E/ep), in a send buffer of `capacity` rows per destination
  shard (slots past it are dropped and counted); one all_to_all over `axis` delivers every shard the rows
  for its experts, which run as a dropless sorted dispatch over the local experts; the reverse all_to_all
  brings the outputs back, and they are combined with the routing weights in fp32.
  """
  t, k = idx_tk.shape
  d, e_local = x_td.shape[1], wg.shape[0]
  rows = ep * capacity
  # The local experts meet tokens that vary over the data axes too; marking the weights so makes their
  # gradients sum over those axes (the custom VJPs of the sorted dispatch need matching types).
  data_axes = tuple(a for a in token_axes if a != axis)
  if data_axes:
    wg, wu, wd = (_pvary(w, data_axes) for w in (wg, wu, wd))
  s_flat, _, _, rank = _slots(idx_tk // e_local, token_mask_t, ep)            # destination shard, null = ep
  keep = (s_flat < ep) & (rank < capacity)
  row_of_slot = jnp.where(keep, s_flat * capacity + rank, rows)
  x_send, slot_of_row = _dispatch(x_td, k, row_of_slot, rows)
  local_expert = jnp.where(keep, idx_tk.reshape(-1) % e_local, e_local)
  e_send = jnp.full((rows,), e_local, jnp.int32).at[row_of_slot].set(local_expert, mode="drop")
  x_recv = jax.lax.all_to_all(x_send.reshape(ep, capacity, d), axis, 0, 0)   # [source shard, slot, D]
  e_recv = jax.lax.all_to_all(e_send.reshape(ep, capacity), axis, 0, 0).reshape(rows)
  valid = e_recv < e_local
  if e_local == 1:
    # One local expert: every received row is its input, so one matmul over the buffer with no sorting and
    # no block padding (rows of empty slots are zeros and are never combined on the way back).
    x_rows = jnp.where(valid[:, None], x_recv.reshape(rows, d), 0)
    y_recv = swiglu(x_rows, stack_gate_up(wg, wu)[0], wd[0], "RD,DF->RF", "RF,FD->RD")
  else:
    y_recv = _sorted_dropless(x_recv.reshape(rows, d), jnp.minimum(e_recv, e_local - 1)[:, None],
                              jnp.ones((rows, 1), jnp.float32), valid, wg, wu, wd, block)
  y_back = jax.lax.all_to_all(y_recv.astype(x_td.dtype).reshape(ep, capacity, d), axis, 0, 0)
  y = _combine(y_back.reshape(rows, d), row_of_slot, slot_of_row, w_tk)
  routed = jnp.sum(s_flat < ep)
  dropped = jnp.sum((s_flat < ep) & ~keep)
  routed, dropped = jax.lax.psum((routed, dropped), token_axes)
  return y, dropped / jnp.maximum(routed, 1)


def _pvary(x, axes):
  """x marked as varying over `axes` inside shard_map (its transpose sums over them)."""
  return jax.lax.pcast(x, axes, to="varying")


def expert_parallel_plan(num_tokens: int, num_experts: int):
  """(mesh, token axes, expert axis, expert-axis size) when the all-to-all dispatch applies here, else None.

  It applies under a mesh (`jax.set_mesh`, or `r1jax.sharding.mesh_rules`, which also sets the logical
  rules; without rules, the default table) when the `expert` logical axis maps to one mesh axis of size
  ep > 1 that divides the experts, and the tokens divide over the batch axes times ep.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return None
  rules = dict(nn.get_logical_axis_rules() or get_rules(DEFAULT_RULES))
  axis = rules.get("expert")
  if not isinstance(axis, str) or axis not in mesh.axis_names:
    return None
  ep = mesh.shape[axis]
  batch = rules.get("batch")
  batch = () if batch is None else (batch,) if isinstance(batch, str) else tuple(batch)
  token_axes = tuple(a for a in batch if a in mesh.axis_names and a != axis) + (axis,)
  if ep <= 1 or num_experts % ep or num_tokens % math.prod(mesh.shape[a] for a in token_axes):
    return None
  return mesh, token_axes, axis, ep


def expert_parallel_mlp(x_td, idx_tk, w_tk, token_mask_t, wg_edf, wu_edf, wd_efd, plan, *,
                        capacity_factor: float, block_size: int = 0):
  """Routed-expert SwiGLU with expert parallelism: tokens go to the devices that hold their experts by
  `jax.lax.all_to_all` inside `jax.shard_map`, and come back the same way (see _exchange_local).

  Tokens are split over the batch axes and the expert axis; each device sends at most
  C = ceil(capacity_factor * t * k / ep) slots to each expert shard (t = its tokens). Exact (the same sums
  as the one-device dropless dispatch) while no (device, shard) pair gets more than C slots; slots past
  it are dropped, and the returned fraction (over the whole batch) says how many.

  Returns (y f32[T, D], dropped fraction f32[]).
  """
  mesh, token_axes, axis, ep = plan
  t, k = idx_tk.shape
  local_t = t // math.prod(mesh.shape[a] for a in token_axes)
  capacity = max(1, math.ceil(capacity_factor * local_t * k / ep))
  block = block_size or auto_block_size(local_t * k, wg_edf.shape[0] // ep)
  tok, experts = P(token_axes), P(axis)
  fn = functools.partial(_exchange_local, axis=axis, ep=ep, capacity=capacity, block=block,
                         token_axes=token_axes)
  return jax.shard_map(fn, mesh=mesh, in_specs=(tok, tok, tok, tok, experts, experts, experts),
                       out_specs=(tok, P()))(x_td, idx_tk, w_tk, token_mask_t, wg_edf, wu_edf, wd_efd)


# ---------------------------------------------------------------------------------------------- layer
class MoE(nn.Module):
  """Routed experts + shared experts. Returns (y, aux) with aux = expert counts, balance loss, drops."""
  cfg: ModelConfig
  runtime: Runtime = DEFAULT

  @nn.compact
  def __call__(self, x_btd: jax.Array, token_mask_bt: jax.Array):
    cfg, dt = self.cfg, self.cfg.jnp_dtype
    b, t, d = x_btd.shape
    e, f = cfg.n_routed_experts, cfg.moe_intermediate_size
    router = param(self, "gate", (d, e), ("embed", None), cfg)
    bias = None
    if cfg.use_routing_bias:
      # Outside "params": gradients, the optimizer and weight decay never touch it (r1jax.model.moe
      # .update_router_bias moves it). Kept in fp32, as HF does.
      bias = self.variable("router_bias", "e_score_correction_bias",
                           lambda: nn.LogicallyPartitioned(jnp.zeros((e,), jnp.float32), (None,))).value
      bias = nn.meta.unbox(bias)
    wg = param(self, "gate_proj", (e, d, f), ("expert", "embed", "expert_mlp"), cfg).astype(dt)
    wu = param(self, "up_proj", (e, d, f), ("expert", "embed", "expert_mlp"), cfg).astype(dt)
    wd = param(self, "down_proj", (e, f, d), ("expert", "expert_mlp", "embed"), cfg).astype(dt)

    x_td = x_btd.reshape(b * t, d)
    mask_t = token_mask_bt.reshape(b * t)
    idx, w, scores = route(x_td, router, bias, cfg)
    rt = self.runtime
    plan = None
    if rt.moe_impl == "sorted" and rt.capacity_factor == 0:
      plan = expert_parallel_plan(b * t, e)
    if plan is not None:
      y, dropped = expert_parallel_mlp(x_td, idx, w, mask_t, wg, wu, wd, plan,
                                       capacity_factor=rt.exchange_capacity_factor, block_size=rt.moe_block_size)
    else:
      y, dropped = expert_mlp(x_td, idx, w, mask_t, wg, wu, wd, impl=rt.moe_impl,
                              capacity_factor=rt.capacity_factor, block_size=rt.moe_block_size, kernels=rt.kernels)
    y = y.astype(dt).reshape(b, t, d)
    if cfg.n_shared_experts:
      y = y + MLP(cfg, f * cfg.n_shared_experts, rt, name="shared_experts")(x_btd)
    aux = {
        "expert_counts": expert_counts(idx, mask_t, e),
        "balance_loss": sequence_balance_loss(scores.reshape(b, t, e), idx.reshape(b, t, -1), token_mask_bt),
        "dropped_fraction": dropped,
    }
    return y, aux
