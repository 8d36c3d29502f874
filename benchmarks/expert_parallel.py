"""Expert parallelism on 8 fake CPU devices: per-device MoE FLOPs, bytes exchanged and step time by expert-axis size.

    python -m benchmarks.expert_parallel [--batch 32 --seq 64 --repeats 5]

For each expert-axis size ep in 1, 2, 4, 8 (mesh {data: 8 / ep, expert: ep}), the routed-expert layer of the
`bench` preset (8 experts, top-2, d=256, expert width 128) on batch x seq tokens, forward + backward:
  * moe_flops_per_device: XLA's cost analysis of the compiled per-device program, and its ratio to the
    one-device dropless dispatch on the whole batch (compiled in the same run; the target is <= 1.3 / ep
    of it for ep > 1: each device computes only its share of the rows);
  * exchanged_bytes_per_device: what the program's all-to-alls move (their result sizes, forward and backward);
    weight_bytes_per_device: the routed experts' weights one device holds;
  * step_s: the median time of the whole 8-device program. On fake devices all 8 share this machine's two
    cores, so this is total work, not a parallel speed-up; the same-run reference is the one-device step.
ep = 1 is the GSPMD sorted dispatch (no expert axis: every device holds all experts, tokens split 8 ways).
Prints one JSON line per result.
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.common import emit, interleaved  # noqa: E402
from r1jax.model import ModelConfig  # noqa: E402
from r1jax.model.moe import expert_mlp, expert_parallel_mlp, expert_parallel_plan, route  # noqa: E402
from r1jax.model.runtime import DEFAULT  # noqa: E402
from r1jax.sharding import make_mesh, mesh_rules  # noqa: E402
from r1jax.sharding.mesh import logical_to_sharding  # noqa: E402

_BYTES = {"f32": 4, "bf16": 2, "s32": 4, "f16": 2, "pred": 1}


def exchanged_bytes(hlo: str) -> int:
  """Sum of the all-to-all results' sizes in a compiled per-device program."""
  total = 0
  for line in hlo.splitlines():
    if " all-to-all(" not in line or "= " not in line:
      continue
    result_type = line.split("= ", 1)[1].split(" all-to-all(", 1)[0]
    for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", result_type):
      n = 1
      for x in filter(None, dims.split(",")):
        n *= int(x)
      total += n * _BYTES.get(dtype, 4)
  return total


def inputs(cfg: ModelConfig, tokens: int):
  ks = jax.random.split(jax.random.key(0), 5)
  d, e, f = cfg.hidden_size, cfg.n_routed_experts, cfg.moe_intermediate_size
  x = jax.random.normal(ks[0], (tokens, d))
  idx, w, _ = route(x, jax.random.normal(ks[1], (d, e)) * 0.3, None, cfg)
  weights = [jax.random.normal(k, s) * 0.05 for k, s in zip(ks[2:], [(e, d, f), (e, d, f), (e, f, d)])]
  return x, idx, w, jnp.ones((tokens,), jnp.int32), weights


def loss_fn(dispatch):
  def loss(weights, x, idx, w, mask):
    y, _ = dispatch(x, idx, w, mask, *weights)
    return jnp.sum(y * y)
  return jax.jit(jax.value_and_grad(loss))


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--seq", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--exchange_capacity_factor", type=float, default=DEFAULT.exchange_capacity_factor,
                  help="send-buffer rows per device pair, in balanced loads (the Runtime default: 2.0)")
  args = ap.parse_args()
  assert jax.device_count() == 8, "needs 8 (fake) devices: XLA_FLAGS=--xla_force_host_platform_device_count=8"
  cfg = ModelConfig.preset("bench")
  t = args.batch * args.seq
  x, idx, w, mask, weights = inputs(cfg, t)
  cf = args.exchange_capacity_factor

  one = loss_fn(lambda *a: expert_mlp(*a, impl="sorted"))
  one_args = (weights, x, idx, w, mask)
  one_flops = _flops(one.lower(*one_args).compile())
  programs, rows = {"one_device": (one, one_args)}, {}
  for ep in (1, 2, 4, 8):
    mesh = make_mesh({"data": 8 // ep, "expert": ep})
    with mesh_rules(mesh):
      plan = expert_parallel_plan(t, cfg.n_routed_experts)
      if plan is None:
        dispatch = lambda *a: expert_mlp(*a, impl="sorted")
      else:
        dispatch = lambda *a, plan=plan: expert_parallel_mlp(*a, plan, capacity_factor=cf)
      fn = loss_fn(dispatch)
      experts = logical_to_sharding(jax.sharding.PartitionSpec("expert", None, None), mesh)
      batch = logical_to_sharding(jax.sharding.PartitionSpec("batch"), mesh)
      placed = ([jax.device_put(a, experts) for a in weights], *(jax.device_put(a, batch) for a in (x, idx, w, mask)))
      compiled = fn.lower(*placed).compile()
      dropped = float(jax.jit(dispatch)(*placed[1:], *placed[0])[1]) if plan is not None else 0.0

    def run(*a, fn=fn, mesh=mesh):
      with mesh_rules(mesh):
        return fn(*a)

    programs[f"ep{ep}"] = (run, placed)
    rows[ep] = dict(mesh={"data": 8 // ep, "expert": ep}, dispatch="all_to_all" if plan else "gspmd_sorted",
                    moe_flops_per_device=_flops(compiled),
                    exchanged_bytes_per_device=exchanged_bytes(compiled.as_text()),
                    weight_bytes_per_device=sum(a.addressable_shards[0].data.nbytes for a in placed[0]),
                    dropped_fraction=dropped)
  for fn, a in programs.values():
    jax.block_until_ready(fn(*a))                                          # warm up
  times = interleaved(programs, args.repeats)
  one_s = statistics.median(times["one_device"])
  emit(name="moe_one_device", tokens=t, experts=cfg.n_routed_experts, top_k=cfg.num_experts_per_tok,
       moe_flops=one_flops, step_s=round(one_s, 4), rounds=args.repeats, loadavg=[round(v, 2) for v in os.getloadavg()])
  for ep, row in rows.items():
    steps = times[f"ep{ep}"]
    emit(name="expert_parallel", tokens=t, exchange_capacity_factor=cf, **row,
         flops_ratio_to_one_device=round(row["moe_flops_per_device"] / one_flops, 3),
         target_ratio=round(1.3 / ep, 3) if ep > 1 else None, step_s=round(statistics.median(steps), 4),
         step_over_one_device=round(statistics.median(s / o for s, o in zip(steps, times["one_device"])), 2))


if __name__ == "__main__":
  main()
