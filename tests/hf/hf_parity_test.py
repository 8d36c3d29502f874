"""r1jax.hf.load / save against transformers: logits, round trip, greedy generation, checkpoint layouts, errors.

Each family gets a tiny random model built with transformers (fp32, eager attention) with every feature
the importer must handle switched on, and random norm weights, biases and (for deepseek_v3) a non-zero,
partly negative e_score_correction_bias. The batch holds a plain row, a left-padded and a right-padded
row of 48 tokens: longer than the YaRN models' original context of 32. Position ids are passed to both
sides (cumsum(mask) - 1, clipped at 0) and only real positions are compared.
"""
import json
import shutil
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from r1jax import hf  # noqa: E402
from r1jax.hf import convert  # noqa: E402
from r1jax.model import ModelConfig, forward, init_variables, param_shardings  # noqa: E402
from r1jax.sharding import make_mesh  # noqa: E402

FAMILIES = ("deepseek_v3", "qwen2", "qwen3", "qwen3_moe")
VOCAB, B, T = 64, 3, 48
ATOL = 1e-4

_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=128, initializer_range=0.2, bos_token_id=0, eos_token_id=1)


def _hf_config(family):
  if family == "deepseek_v3":
    # Every V3 feature: q_lora, group-limited routing (4 groups, keep 2), YaRN with mscale != mscale_all_dim,
    # a dense first layer, a shared expert, v_head_dim != qk_nope_head_dim, rms_norm_eps != 1e-6 (the
    # latent norms must still use 1e-6).
    return transformers.DeepseekV3Config(
        **_COMMON, num_key_value_heads=4, moe_intermediate_size=16, n_shared_experts=1, n_routed_experts=8,
        n_group=4, topk_group=2, num_experts_per_tok=3, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=16,
        qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12, routed_scaling_factor=2.5, rms_norm_eps=1e-5,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 32,
                      "beta_slow": 1, "mscale": 0.9, "mscale_all_dim": 0.8})
  if family == "qwen2":  # qkv biases, tied embeddings
    return transformers.Qwen2Config(**_COMMON, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e4)
  if family == "qwen3":  # q/k norms, explicit head_dim != hidden / heads, untied
    return transformers.Qwen3Config(**_COMMON, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False)
  # qwen3_moe: softmax top-k with renormalisation, and a Qwen-style YaRN (no mscale: cos/sin scaled).
  return transformers.Qwen3MoeConfig(
      **_COMMON, num_key_value_heads=2, head_dim=16, num_experts=8, num_experts_per_tok=2,
      moe_intermediate_size=16, norm_topk_prob=True,
      rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})


def _hf_model(family, seed=0):
  cfg = _hf_config(family)
  cfg._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):            # HF initialises norms to 1: a transposed norm would pass
        p.copy_(torch.rand(p.shape, generator=g) + 0.5)
      elif name.endswith("bias"):
        p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    for name, b in model.named_buffers():
      if name.endswith("e_score_correction_bias"):
        # In [-1.2, -0.2]: many biased scores fall below 0, so chosen groups often hold fewer than k
        # positive candidates, where masking dropped groups with 0.0 (HF v4.5x) instead of -inf (HF v5,
        # DeepSeek's reference) would pick a masked expert.
        b.copy_(torch.rand(b.shape, generator=g) - 1.2)
  return model.eval()


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, VOCAB, (B, T))
  mask = np.ones((B, T), np.int64)
  mask[1, :5] = 0     # left padding
  mask[2, -7:] = 0    # right padding
  positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
  return tokens, mask, positions


def _hf_logits(model, tokens, mask, positions):
  with torch.no_grad():
    return model(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(positions)).logits.numpy()


_fwd = jax.jit(forward, static_argnums=0)


def _r1jax_logits(cfg, params, tokens, mask, positions):
  return np.asarray(_fwd(cfg, params, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(positions)))


def _assert_close_on_real(a, b, mask):
  np.testing.assert_allclose(a[mask == 1], b[mask == 1], atol=ATOL, rtol=0)


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


_FAMILIES: dict = {}


def _family(name, tmp_path_factory):
  """A tiny HF model of one family, saved with save_pretrained, its reference logits and the r1jax load
  (built once per test session)."""
  if name not in _FAMILIES:
    model = _hf_model(name)
    path = tmp_path_factory.mktemp(name)
    model.save_pretrained(path)
    batch = _batch()
    cfg, params = hf.load(path)
    _FAMILIES[name] = dict(name=name, model=model, path=path, batch=batch, ref=_hf_logits(model, *batch),
                           cfg=cfg, params=params)
  return _FAMILIES[name]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
  return _family(request.param, tmp_path_factory)


# ------------------------------------------------------------------------------------------------ parity
def test_logits_match_transformers(family):
  tokens, mask, positions = family["batch"]
  out = _r1jax_logits(family["cfg"], family["params"], tokens, mask, positions)
  _assert_close_on_real(out, family["ref"], mask)
  assert np.abs(family["ref"]).std() > 0.3       # the comparison is not between near-constant logits


def test_save_round_trip_through_transformers(family, tmp_path):
  hf.save(tmp_path, family["cfg"], family["params"], extra_config={"bos_token_id": 0, "eos_token_id": 1})
  back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
  assert back.config.model_type == family["name"]
  tokens, mask, positions = family["batch"]
  _assert_close_on_real(_hf_logits(back, tokens, mask, positions), family["ref"], mask)
  cfg2, params2 = hf.load(tmp_path)
  assert cfg2 == family["cfg"]
  _assert_trees_equal(params2, family["params"])


# The sampler compiles a prefill and a decode loop per family (10-20 s each on 2 shared cores).
# deepseek_v3 (MLA absorbed decode + MoE) and qwen2 (GQA cache, biases, tied head) run in the fast suite;
# qwen3 and qwen3_moe add only q/k norm and softmax routing, already covered by the logits tests.
@pytest.mark.parametrize("name", ["deepseek_v3", "qwen2", pytest.param("qwen3", marks=pytest.mark.slow),
                                  pytest.param("qwen3_moe", marks=pytest.mark.slow)])
def test_greedy_generation_matches_transformers(name, tmp_path_factory):
  from r1jax.sampling import sample
  family = _family(name, tmp_path_factory)
  rng = np.random.default_rng(1)
  prompt = rng.integers(2, VOCAB, (2, 8))
  pmask = np.ones_like(prompt)
  pmask[1, :3], prompt[1, :3] = 0, 0    # one left-padded prompt
  model = family["model"]
  model.generation_config.eos_token_id = None   # run all 16 steps on both sides
  model.generation_config.pad_token_id = 0
  with torch.no_grad():
    ref = model.generate(torch.tensor(prompt), attention_mask=torch.tensor(pmask), max_new_tokens=16,
                         do_sample=False)[:, prompt.shape[1]:].numpy()
  out = sample(family["cfg"], family["params"], jnp.asarray(prompt), jnp.asarray(pmask), rng=jax.random.key(0),
               num_samples=1, max_new_tokens=16, greedy=True, eos_id=None)
  np.testing.assert_array_equal(np.asarray(out.tokens), ref)


# r1jax-native configurations exported to HF: transformers' logits equal r1jax's. Each compiles its own
# forward, so only the first is in the fast suite.
@pytest.mark.parametrize("cfg", [
    ModelConfig.preset("tiny_qwen3_moe", first_k_dense_replace=1, initializer_range=0.2),  # mlp_only_layers=[0]
    pytest.param(ModelConfig.preset("tiny_qwen2", attention_bias=False, initializer_range=0.2),  # zero biases
                 marks=pytest.mark.slow),
    pytest.param(ModelConfig.preset("tiny", use_routing_bias=False, initializer_range=0.2),      # zero bias
                 marks=pytest.mark.slow),
    pytest.param(ModelConfig.preset("tiny", n_routed_experts=0, initializer_range=0.2),          # dense MLA
                 marks=pytest.mark.slow),
], ids=["qwen3_moe_first_dense", "qwen2_no_bias", "deepseek_no_routing_bias", "dense_mla"])
def test_native_config_exports_to_transformers(cfg, tmp_path):
  params = init_variables(cfg, jax.random.key(0))
  hf.save(tmp_path, cfg, params)
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
  tokens, mask, positions = (x[:, :24] for x in _batch(2))
  _assert_close_on_real(_r1jax_logits(cfg, params, tokens, mask, positions),
                        _hf_logits(model, tokens, mask, positions), mask)


# ----------------------------------------------------------------------------------- checkpoint layouts
@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
  """The deepseek_v3 tiny model's checkpoint (state dict + config) and its r1jax load."""
  model = _hf_model("deepseek_v3", seed=3)
  path = tmp_path_factory.mktemp("ds_base")
  model.save_pretrained(path)
  cfg, params = hf.load(path)
  return dict(path=path, state=safetensors_torch.load_file(path / "model.safetensors"), cfg=cfg, params=params)


def _write(dirpath, state, config_src, config_update=None):
  dirpath.mkdir(parents=True, exist_ok=True)
  conf = json.loads((config_src / "config.json").read_text())
  conf.update(config_update or {})
  (dirpath / "config.json").write_text(json.dumps(conf))
  safetensors_torch.save_file(state, dirpath / "model.safetensors", metadata={"format": "pt"})
  return dirpath


def _fuse_experts(state, num_layers, num_experts):
  """Rewrites per-expert keys into transformers v5's fused layout."""
  state = dict(state)
  for i in range(num_layers):
    pre = f"model.layers.{i}.mlp.experts"
    if f"{pre}.0.gate_proj.weight" not in state:
      continue
    g = [state.pop(f"{pre}.{e}.gate_proj.weight") for e in range(num_experts)]
    u = [state.pop(f"{pre}.{e}.up_proj.weight") for e in range(num_experts)]
    d = [state.pop(f"{pre}.{e}.down_proj.weight") for e in range(num_experts)]
    state[f"{pre}.gate_up_proj"] = torch.cat([torch.stack(g), torch.stack(u)], dim=1)   # [E, 2I, D], gate first
    state[f"{pre}.down_proj"] = torch.stack(d)                                          # [E, D, I]
  return state


def test_fused_v5_expert_layout(deepseek, tmp_path):
  cfg = deepseek["cfg"]
  fused = _fuse_experts(deepseek["state"], cfg.num_hidden_layers, cfg.n_routed_experts)
  assert "model.layers.1.mlp.experts.gate_up_proj" in fused
  cfg2, params2 = hf.load(_write(tmp_path / "fused", fused, deepseek["path"]))
  assert cfg2 == cfg
  _assert_trees_equal(params2, deepseek["params"])


def _quantize_fp8(w, block):
  """Block-wise e4m3 quantisation as DeepSeek's release does: per-block amax / 448 scales."""
  w = w.numpy().astype(np.float32)
  bo, bi = block
  so, si = -(-w.shape[0] // bo), -(-w.shape[1] // bi)
  scale = np.zeros((so, si), np.float32)
  q = np.zeros(w.shape, ml_dtypes.float8_e4m3fn)
  for r in range(so):
    for c in range(si):
      blk = w[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi]
      scale[r, c] = max(np.abs(blk).max(), 1e-12) / 448.0
      q[r * bo:(r + 1) * bo, c * bi:(c + 1) * bi] = (blk / scale[r, c]).astype(ml_dtypes.float8_e4m3fn)
  return q, scale


def test_dequantize_fp8_128_blocks_trims_padding():
  rng = np.random.default_rng(0)
  w = torch.tensor(rng.normal(size=(300, 200)).astype(np.float32))      # 3 x 2 blocks, both partial
  q, scale = _quantize_fp8(w, (128, 128))
  out = hf.dequantize_fp8(q, scale)
  expected = q.astype(np.float32) * np.kron(scale, np.ones((128, 128), np.float32))[:300, :200]
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_allclose(out, w.numpy(), rtol=0.07, atol=1e-4)     # e4m3: 3 mantissa bits, subnormals


def test_fp8_checkpoint_dequantised_on_load(deepseek, tmp_path):
  block = (16, 16)   # small blocks so tiny weights span several, with padding ([24, 32] -> 2 x 2 blocks)
  state, expected = dict(deepseek["state"]), {}
  for name in list(state):
    # As in the release: attention and expert/dense MLP weights are FP8; norms, router, embeddings are not.
    if name.endswith(("_proj.weight", "_proj_with_mqa.weight")) and state[name].ndim == 2:
      q, scale = _quantize_fp8(state[name], block)
      state[name] = torch.from_numpy(q.view(np.uint8)).view(torch.float8_e4m3fn)
      state[name + "_scale_inv"] = torch.from_numpy(scale)
      expected[name] = hf.dequantize_fp8(q, scale, block)
  qc = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": list(block)}
  path = _write(tmp_path / "fp8", state, deepseek["path"], {"quantization_config": qc})
  cfg, params = hf.load(path)
  p = params["params"]
  np.testing.assert_array_equal(np.asarray(p["layers_0"]["self_attn"]["kv_a_proj_with_mqa"]),
                                expected["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"].T)
  np.testing.assert_array_equal(np.asarray(p["layers_1"]["mlp"]["down_proj"][5]),
                                expected["model.layers.1.mlp.experts.5.down_proj.weight"].T)
  np.testing.assert_array_equal(np.asarray(p["layers_1"]["mlp"]["gate"]),
                                state["model.layers.1.mlp.gate.weight"].numpy().T)   # not quantised


def test_mtp_layer_skipped(deepseek, tmp_path):
  cfg = deepseek["cfg"]
  state, n, d = dict(deepseek["state"]), cfg.num_hidden_layers, cfg.hidden_size
  for name, v in deepseek["state"].items():       # a full decoder layer at index num_hidden_layers ...
    if name.startswith("model.layers.1."):
      state[name.replace("model.layers.1.", f"model.layers.{n}.")] = v.clone()
  state.update({f"model.layers.{n}.enorm.weight": torch.ones(d), f"model.layers.{n}.hnorm.weight": torch.ones(d),
                f"model.layers.{n}.eh_proj.weight": torch.zeros(d, 2 * d),     # ... plus the MTP extras
                f"model.layers.{n}.shared_head.norm.weight": torch.ones(d),
                f"model.layers.{n}.shared_head.head.weight": state["lm_head.weight"].clone(),
                f"model.layers.{n}.embed_tokens.weight": state["model.embed_tokens.weight"].clone()})
  cfg2, params2 = hf.load(_write(tmp_path / "mtp", state, deepseek["path"], {"num_nextn_predict_layers": 1}))
  assert cfg2 == cfg
  _assert_trees_equal(params2, deepseek["params"])


def test_sharded_index(tmp_path, monkeypatch):
  model = _hf_model("qwen3_moe", seed=4)
  model.save_pretrained(tmp_path / "one")
  model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
  assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
  assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 2
  _assert_trees_equal(hf.load(tmp_path / "sharded")[1], hf.load(tmp_path / "one")[1])
  # r1jax's own writer shards too, and reads back identically.
  cfg, params = hf.load(tmp_path / "one")
  hf.save(tmp_path / "ours", cfg, params, max_shard_bytes=30_000)
  assert len(json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())["weight_map"]) > 0
  _assert_trees_equal(hf.load(tmp_path / "ours")[1], params)
  # Saving over an older export is refused (its shards and index would mix with the new files) and
  # changes nothing; a failed save leaves no directory behind.
  before = sorted(p.name for p in (tmp_path / "ours").iterdir())
  with pytest.raises(FileExistsError, match="exists and is not empty"):
    hf.save(tmp_path / "ours", cfg, params)
  assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == before

  def dies(*a, **kw):
    raise OSError("disk full")

  monkeypatch.setattr(sys.modules["r1jax.hf.save"], "write_safetensors", dies)
  with pytest.raises(OSError, match="disk full"):
    hf.save(tmp_path / "failed", cfg, params, max_shard_bytes=30_000)
  assert not [p for p in tmp_path.iterdir() if "failed" in p.name]


def test_load_into_mesh_shardings(deepseek):
  mesh = make_mesh({"fsdp": 2, "expert": 2, "tensor": 2})
  cfg, params = hf.load(deepseek["path"], mesh=mesh)
  want = param_shardings(cfg, mesh)
  for x, s in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    assert x.sharding.is_equivalent_to(s, x.ndim)
  assert params["params"]["layers_1"]["mlp"]["gate_proj"].sharding.spec[0] == "expert"
  _assert_trees_equal(params, deepseek["params"])


def test_bfloat16_load_and_save(deepseek, tmp_path):
  cfg, params = hf.load(deepseek["path"], dtype="bfloat16")
  assert cfg.param_dtype == cfg.dtype == "bfloat16"
  assert params["params"]["embed_tokens"].dtype == jnp.bfloat16
  assert params["router_bias"]["layers_1"]["mlp"]["e_score_correction_bias"].dtype == jnp.float32
  hf.save(tmp_path, cfg, params)
  cfg2, params2 = hf.load(tmp_path)                       # torch_dtype bfloat16 -> loads as bf16
  assert cfg2 == cfg
  _assert_trees_equal(params2, params)


# -------------------------------------------------------------------------------------------- bad input
def test_missing_tensor_is_named(deepseek, tmp_path):
  state = dict(deepseek["state"])
  del state["model.layers.1.mlp.experts.3.up_proj.weight"]
  with pytest.raises(hf.CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.experts\.3\.up_proj"):
    hf.load(_write(tmp_path / "m", state, deepseek["path"]))


def test_shape_mismatch_names_tensor_and_shapes(deepseek, tmp_path):
  state = dict(deepseek["state"])
  state["model.layers.0.self_attn.q_b_proj.weight"] = torch.zeros(80, 16)
  with pytest.raises(hf.CheckpointError, match=r"q_b_proj\.weight' has shape \(80, 16\), expected \(64, 16\)"):
    hf.load(_write(tmp_path / "s", state, deepseek["path"]))


def test_unexpected_tensor_is_an_error(deepseek, tmp_path):
  state = dict(deepseek["state"])
  state["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(32)   # would silently change the model
  with pytest.raises(hf.CheckpointError, match=r"unexpected tensor 'model\.layers\.0\.self_attn\.o_proj\.bias'"):
    hf.load(_write(tmp_path / "u", state, deepseek["path"]))


def test_fp8_without_scale_is_an_error(deepseek, tmp_path):
  state = dict(deepseek["state"])
  state["model.layers.0.self_attn.q_a_proj.weight"] = state["model.layers.0.self_attn.q_a_proj.weight"].to(
      torch.float8_e4m3fn)
  with pytest.raises(hf.CheckpointError, match=r"q_a_proj\.weight_scale_inv' is missing"):
    hf.load(_write(tmp_path / "f", state, deepseek["path"]))


@pytest.mark.parametrize("update, match", [
    ({"model_type": "llama"}, r"model_type='llama' is not supported; supported: \('deepseek_v3'"),
    ({"scoring_func": "softmax"}, r"scoring_func='softmax' is not supported"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}, "rope_parameters": None}, r"rope_type='linear'"),
])
def test_bad_config_fails_before_reading_tensors(deepseek, tmp_path, update, match):
  path = tmp_path / "c"
  shutil.copytree(deepseek["path"], path)
  (path / "model.safetensors").write_bytes(b"not a checkpoint")     # never reached
  conf = json.loads((path / "config.json").read_text())
  conf.update(update)
  (path / "config.json").write_text(json.dumps(conf))
  with pytest.raises(hf.HFConfigError, match=match):
    hf.load(path)


def test_no_checkpoint_files(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(_hf_config("qwen2").to_dict()))
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(hf.CheckpointError, match=r"PyTorch \.bin checkpoints are not supported"):
    hf.load(tmp_path)


def test_convert_hf_orbax_hf(deepseek, tmp_path):
  convert.main(["--from_hf", str(deepseek["path"]), "--to_orbax", str(tmp_path / "orbax")])
  cfg, params = convert.load_orbax(tmp_path / "orbax")
  assert cfg == deepseek["cfg"]
  _assert_trees_equal(params, deepseek["params"])
  convert.main(["--from_orbax", str(tmp_path / "orbax"), "--to_hf", str(tmp_path / "hf")])
  conf = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert (conf["model_type"], conf["bos_token_id"], conf["eos_token_id"]) == ("deepseek_v3", 0, 1)
  assert (tmp_path / "hf" / "generation_config.json").exists()
  _assert_trees_equal(hf.load(tmp_path / "hf")[1], deepseek["params"])
