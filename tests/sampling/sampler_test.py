"""The sampler: its log-probs are the model's, its masks and flags are right, greedy/top-k/top-p behave,
the sharded run equals the unsharded one, and bad arguments fail with clear errors.

Compiling is the slow part, so every test shares one shape (B=2 prompts x G=4 samples, P=6, N=6) and
the few option sets below; stop ids are traced, so changing eos does not recompile.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.kernels import cpu as cpu_kernels
from r1jax.model import ModelConfig, Runtime, forward, init_variables, param_shardings
from r1jax.sampling import sample
from r1jax.sampling import sampler as sampler_lib
from r1jax.sampling.sampler import (_decode_runtime, _filter_logits, _inverse_cdf_sample, _Options, _prefill_runtime,
                                    _sample_jit)
from r1jax.sharding import make_mesh

B, P, G, N = 2, 6, 4, 6
RT = Runtime()
TEMPERATURE = 0.7


def _prompts(cfg):
  rs = np.random.RandomState(0)
  mask = (np.arange(P)[None, :] >= np.array([0, 3])[:, None]).astype(np.int32)   # row 1 left-padded by 3
  return np.where(mask > 0, rs.randint(1, cfg.vocab_size, (B, P)), 0).astype(np.int32), mask


def _random_params(cfg, seed=0, scale=0.3):
  """Params of init_variables' tree and shapes, drawn with numpy: compiling init_variables costs ~6 s here.

  Norm scales and router biases are random too, which is fine for equality tests. The scale, larger
  than the default 0.02, gives peaked next-token distributions, so greedy decoding is far from ties.
  """
  shapes = jax.eval_shape(lambda: init_variables(cfg, jax.random.key(0)))
  rs = np.random.RandomState(seed)
  return jax.tree.map(lambda s: jnp.asarray(rs.normal(0.0, scale, s.shape).astype(s.dtype)), shapes)


@pytest.fixture(scope="module", params=["tiny", "tiny_xla", "tiny_qwen2", pytest.param("tiny_sorted", marks=pytest.mark.slow)])
def model(request):
  """(cfg, params, sample kwargs). "tiny" decodes with the CPU kernels where they build (see
  test_auto_decode_uses_the_cpu_kernels_on_one_cpu), "tiny_xla" with XLA only (dense MoE dispatch)."""
  kw = {}
  if request.param == "tiny_sorted":   # E > 4k: the prefill and the decode steps keep the sorted dispatch
    cfg = ModelConfig.preset("tiny").replace(n_routed_experts=12)
    assert _prefill_runtime(cfg, RT, B * P).moe_impl == _decode_runtime(cfg, RT, "same", B * G, True).moe_impl \
        == "sorted"
    kw = dict(decode_moe_impl="same")
  elif request.param == "tiny_xla":
    cfg, kw = ModelConfig.preset("tiny"), dict(decode_moe_impl="dense")
  else:
    cfg = ModelConfig.preset(request.param)
  return cfg, _random_params(cfg), kw


@pytest.fixture(scope="module")
def tiny():
  cfg = ModelConfig.preset("tiny")
  return cfg, _random_params(cfg)


def _greedy(cfg, params, eos_id=None, **kw):
  tokens, mask = _prompts(cfg)
  return sample(cfg, params, tokens, mask, rng=jax.random.key(1), num_samples=G, max_new_tokens=N,
                greedy=True, eos_id=eos_id, **kw)


def _reference_logprobs(cfg, params, out, temperature):
  """log_softmax(logits / T) of a full forward over prompt + completion, at the completion tokens."""
  tokens, mask = _prompts(cfg)
  seq = np.concatenate([np.repeat(tokens, G, 0), np.asarray(out.tokens)], axis=1)
  seq_mask = np.concatenate([np.repeat(mask, G, 0), np.asarray(out.mask)], axis=1)
  logits = np.asarray(jax.jit(lambda p, t, m: forward(cfg, p, t, m))(params, seq, seq_mask), np.float64)
  z = logits[:, P - 1:P + N - 1] / temperature        # position t predicts token t + 1
  logp = z - z.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  return np.take_along_axis(logp, np.asarray(out.tokens)[..., None], axis=-1)[..., 0]


def _check_completion_invariants(out, stops, pad_id=0):
  tokens, logp, mask = (np.asarray(x) for x in (out.tokens, out.logprobs, out.mask))
  lengths, truncated = np.asarray(out.lengths), np.asarray(out.truncated)
  assert tokens.shape == logp.shape == mask.shape == (B * G, N)
  assert tokens.dtype == np.int32 and logp.dtype == np.float32
  for s in range(B * G):
    hits = [i for i in range(N) if tokens[s, i] in stops]
    end = hits[0] + 1 if hits else N                     # the stop token itself is in the completion
    np.testing.assert_array_equal(mask[s], np.arange(N) < end)
    assert lengths[s] == end and truncated[s] == (not hits)
    assert np.all(tokens[s, end:] == pad_id) and np.all(logp[s, end:] == 0.0)
    assert np.all(logp[s, :end] < 0.0)


# ------------------------------------------------------------------------------------------ log-probs
def test_logprobs_equal_full_forward_and_masks_are_right(model):
  cfg, params, kw = model
  tokens, mask = _prompts(cfg)
  run = lambda **stops: sample(cfg, params, tokens, mask, rng=jax.random.key(7), num_samples=G,
                               max_new_tokens=N, temperature=TEMPERATURE, **kw, **stops)
  free = np.asarray(run(eos_id=None).tokens)
  # Stop ids are traced, and each step's randomness depends only on (rng, step): with stops the run
  # draws the same tokens up to each row's first stop. Stop on row 0's third token and on another
  # token, so that some rows end early while others run out of budget.
  stops = (int(free[0, 2]), int(free[-1, 4]))
  out = run(eos_id=stops[0], stop_ids=stops[1:])
  _check_completion_invariants(out, stops)
  m = np.asarray(out.mask) > 0
  np.testing.assert_array_equal(np.where(m, np.asarray(out.tokens), 0), np.where(m, free, 0))
  assert np.asarray(out.lengths)[0] <= 3 and np.any(np.asarray(out.truncated))

  ref = _reference_logprobs(cfg, params, out, TEMPERATURE)
  np.testing.assert_allclose(np.asarray(out.logprobs)[m], ref[m], atol=1e-4)


# ------------------------------------------------------------------------------------------ greedy
def test_greedy_is_deterministic_and_temperature_zero_is_greedy(tiny):
  cfg, params = tiny
  tokens, mask = _prompts(cfg)
  a = _greedy(cfg, params)
  compiled = _sample_jit._cache_size()
  b = sample(cfg, params, tokens, mask, rng=jax.random.key(99), num_samples=G, max_new_tokens=N,
             temperature=0.0, eos_id=None)
  assert _sample_jit._cache_size() == compiled               # same program: nothing recompiled
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # All G samples of a prompt are the same; nothing stops, so every row is truncated at N.
  t = np.asarray(a.tokens).reshape(B, G, N)
  assert np.all(t == t[:, :1])
  assert np.all(np.asarray(a.truncated)) and np.all(np.asarray(a.lengths) == N)
  # Greedy log-probs are log_softmax(logits) at T = 1.
  ref = _reference_logprobs(cfg, params, a, 1.0)
  np.testing.assert_allclose(np.asarray(a.logprobs), ref, atol=1e-4)


def test_top_k_1_equals_greedy(tiny):
  cfg, params = tiny
  tokens, mask = _prompts(cfg)
  greedy = _greedy(cfg, params)
  top1 = sample(cfg, params, tokens, mask, rng=jax.random.key(3), num_samples=G, max_new_tokens=N,
                temperature=1.0, top_k=1, eos_id=None)
  np.testing.assert_array_equal(np.asarray(top1.tokens), np.asarray(greedy.tokens))
  np.testing.assert_allclose(np.asarray(top1.logprobs), np.asarray(greedy.logprobs), atol=1e-6)


def test_nothing_after_eos_is_unmasked(tiny):
  cfg, params = tiny
  first = np.asarray(_greedy(cfg, params).tokens)
  # Prompt 0's first greedy token as eos: its G rows stop at step 0 (length 1, EOS included).
  eos = int(first[0, 0])
  out = _greedy(cfg, params, eos_id=eos)
  _check_completion_invariants(out, {eos})
  assert np.all(np.asarray(out.lengths)[:G] == 1) and not np.any(np.asarray(out.truncated)[:G])
  # A stop id for each prompt's first token (eos stays another id): every row ends at step 0 and the
  # loop exits early; the rest is padding.
  both = _greedy(cfg, params, eos_id=0, stop_ids=(eos, int(first[G, 0])), pad_id=5)
  _check_completion_invariants(both, {0, eos, int(first[G, 0])}, pad_id=5)
  assert np.all(np.asarray(both.lengths) == 1) and np.all(np.asarray(both.tokens)[:, 1:] == 5)


# ------------------------------------------------------------------------------------------ token choice
def _opts(**kw):
  base = dict(num_samples=1, max_new_tokens=1, greedy=False, top_k=0, use_top_p=False, pad_id=0,
              decode_runtime=RT, prefill_runtime=RT)
  return _Options(**{**base, **kw})


def test_auto_decode_uses_the_cpu_kernels_on_one_cpu():
  tiny, bench = ModelConfig.preset("tiny"), ModelConfig.preset("bench")
  if cpu_kernels._compiler() is not None:      # a compiler is here: the kernels must build and be chosen
    for cfg in (tiny, bench):
      chosen = _decode_runtime(cfg, RT, "auto", B * G, one_cpu=True)
      assert (chosen.attention_impl, chosen.moe_impl, chosen.mlp_impl, chosen.kernels) == ("kernel",) * 3 + (
          cpu_kernels,)
    qwen = ModelConfig.preset("tiny_qwen2")                                      # GQA: the MLP kernel only
    assert _decode_runtime(qwen, RT, "auto", B * G, one_cpu=True) == RT.replace(mlp_impl="kernel",
                                                                                 kernels=cpu_kernels)
  assert _decode_runtime(bench, RT, "auto", 64, one_cpu=False).moe_impl == "dense"      # a mesh / an accelerator
  assert _decode_runtime(bench, RT, "dense", 64, one_cpu=True).attention_impl == "xla"  # an explicit MoE choice
  bf16 = bench.replace(dtype="bfloat16")
  assert _decode_runtime(bf16, RT, "auto", 64, one_cpu=True).moe_impl == "dense"        # the kernels are f32 only
  with pytest.raises(ValueError, match="decode_moe_impl='kernel'.*one CPU device"):
    _decode_runtime(bench, RT, "kernel", 64, one_cpu=False)


def test_without_a_compiler_auto_decode_stays_on_xla(monkeypatch):
  monkeypatch.setattr(cpu_kernels, "available", lambda: False)
  chosen = _decode_runtime(ModelConfig.preset("bench"), RT, "auto", 64, one_cpu=True)
  assert (chosen.attention_impl, chosen.moe_impl, chosen.mlp_impl) == ("xla", "dense", "xla")


def test_prefill_dispatch_is_dense_only_for_short_prompts_and_few_experts():
  bench = ModelConfig.preset("bench")                       # E=8, k=2, dropless sorted
  assert _prefill_runtime(bench, RT, 8 * 32).moe_impl == "dense"    # 64-row expert loads
  assert _prefill_runtime(bench, RT, 8 * 512) == RT                 # 1024-row loads: sorted blocks are efficient
  many = bench.replace(n_routed_experts=64)
  assert _prefill_runtime(many, RT, 8 * 32) == RT                   # E > 4k: 32x the routed FLOPs
  capped = RT.replace(capacity_factor=1.25)
  assert _prefill_runtime(bench, capped, 8 * 32) == capped          # a capacity runtime keeps its drops
  dense_model = ModelConfig.preset("tiny_qwen2")
  assert _prefill_runtime(dense_model, RT, 8) == RT


def test_top_k_and_top_p_keep_the_right_sets():
  logits = jnp.log(jnp.array([[0.05, 0.4, 0.1, 0.3, 0.15], [0.2, 0.2, 0.2, 0.2, 0.2]]))
  kept = lambda top_p, **kw: np.isfinite(np.asarray(
      jax.jit(lambda l, p: _filter_logits(l, p, _opts(**kw)))(logits, jnp.float32(top_p))))
  np.testing.assert_array_equal(kept(1.0, top_k=2)[0], [0, 1, 0, 1, 0])
  # top-p keeps the smallest prefix (by probability) whose mass reaches p: 0.4 + 0.3 = 0.7 >= 0.6.
  np.testing.assert_array_equal(kept(0.6, use_top_p=True)[0], [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(kept(0.71, use_top_p=True)[0], [0, 1, 0, 1, 1])
  np.testing.assert_array_equal(kept(1e-6, use_top_p=True)[0], [0, 1, 0, 0, 0])   # the top token stays
  # top-k first, then top-p over what is left; ties at the cut-off value are kept.
  np.testing.assert_array_equal(kept(0.5, top_k=3, use_top_p=True)[0], [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(kept(0.1, top_k=2)[1], [1, 1, 1, 1, 1])


def test_inverse_cdf_sampling_follows_the_distribution():
  probs = np.array([0.5, 0.0, 0.2, 0.0, 0.3] + [0.0] * 20, np.float32)   # V=25: blocks of 8, some empty
  logits = jnp.tile(jnp.log(jnp.asarray(probs)), (20000, 1))
  tokens = np.asarray(jax.jit(_inverse_cdf_sample)(jax.random.key(0), logits))
  freq = np.bincount(tokens, minlength=probs.size) / tokens.size
  assert set(np.unique(tokens)) <= {0, 2, 4}                         # zero-mass tokens never drawn
  np.testing.assert_allclose(freq, probs, atol=0.015)


# ------------------------------------------------------------------------------------------ sharding
@pytest.mark.parametrize("shape", [{"data": 2, "expert": 4}, {"data": 8}])
def test_sharded_greedy_equals_unsharded(tiny, shape):
  cfg, params = tiny
  ref = _greedy(cfg, params)
  mesh = make_mesh(shape)   # data=8: 2 prompts cannot split 8 ways, so the prefill runs replicated
  sharded_params = jax.device_put(params, param_shardings(cfg, mesh))   # experts split on `expert`
  out = _greedy(cfg, sharded_params, mesh=mesh)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref.logprobs), atol=1e-5)
  assert out.tokens.sharding.spec[0] is not None           # rows stay split over the data axes


def test_data_parallel_sampling_communicates_only_the_stop_flag(tiny, monkeypatch):
  # Rows are independent: on a data-only mesh the one cross-device op is the loop's "all finished?"
  # all-reduce. (MoE routing once compiled to 18 all-gathers per decode step here.)
  cfg, params = tiny
  mesh = make_mesh({"data": 2}, devices=jax.devices()[:2])
  programs = []
  real_jit = sampler_lib._sample_jit

  def capture(*args, **kw):
    programs.append(real_jit.lower(*args, **kw).compile().as_text())
    return real_jit(*args, **kw)

  monkeypatch.setattr(sampler_lib, "_sample_jit", capture)
  _greedy(cfg, jax.device_put(params, param_shardings(cfg, mesh)), mesh=mesh)
  (hlo,) = programs
  collectives = re.findall(r" (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(", hlo)
  assert collectives == ["all-reduce"], collectives


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("change, match", [
    (dict(max_new_tokens=251), "max_new_tokens=251.*max_position_embeddings=256"),
    (dict(max_new_tokens=5, max_len=10), "max_new_tokens=5.*max_len=10"),
    (dict(temperature=-0.5), "temperature=-0.5"),
    (dict(temperature=float("nan")), "temperature=nan"),
    (dict(num_samples=0), "num_samples=0"),
    (dict(max_new_tokens=0), "max_new_tokens=0"),
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(top_p=1.5), "top_p=1.5"),
    (dict(top_k=-1), "top_k=-1"),
    (dict(eos_id=64), "eos_id=64"),
    (dict(prompt_mask=np.ones((B, P + 1), np.int32)), r"prompt_mask.shape=\(2, 7\)"),
    (dict(prompt_tokens=np.zeros((B * P,), np.int32)), r"prompt_tokens.shape=\(12,\)"),
    (dict(prompt_mask=np.array([[1, 1, 1, 1, 1, 0]] * B)), "left-padded"),
])
def test_bad_arguments_raise_value_errors(tiny, change, match):
  cfg, params = tiny
  tokens, mask = _prompts(cfg)
  kw = dict(prompt_tokens=tokens, prompt_mask=mask, rng=jax.random.key(0), num_samples=G, max_new_tokens=N,
            eos_id=3)
  kw.update(change)
  with pytest.raises(ValueError, match=match):
    sample(cfg, params, **kw)
