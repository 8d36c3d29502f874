"""Every stage from a Hugging Face model directory and back, on tiny random checkpoints that transformers
creates here (r1jax.testing.hf_checkpoints): qwen2, qwen3, qwen3_moe and deepseek_v3 weights, a byte-level
BPE tokenizer.json, a chat template and a generation config, as a released model directory holds them."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from configs import grpo as grpo_config  # noqa: E402
from configs import sft as sft_config  # noqa: E402
from r1jax.checkpoint import load_model, save_model  # noqa: E402
from r1jax.config_utils import ConfigFieldError  # noqa: E402
from r1jax.data import get_template  # noqa: E402
from r1jax.data.templates import BOXED_INSTRUCTION  # noqa: E402
from r1jax.hf import convert  # noqa: E402
from r1jax.model import ModelConfig, forward  # noqa: E402
from r1jax.stages import models, standalone  # noqa: E402
from r1jax.testing.hf_checkpoints import FAMILIES, tiny_hf_model, write_tokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
MESSAGES = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi  "},
     {"role": "assistant", "content": "<think> ok </think> Hello"}, {"role": "user", "content": "Sum 1 2"}],
]


@pytest.mark.parametrize("r1_style", [False, True], ids=["chatml", "r1_distill"])
def test_chat_templates_render_and_tokenize_as_transformers(r1_style, tmp_path):
  """The model's Jinja chat template renders what transformers' apply_chat_template renders, the prompt
  templates "chat"/"chat_boxed" are the one-user-message case, tokens match, and a template that prints the
  BOS token gets no second one."""
  write_tokenizer(tmp_path, r1_distill_style=r1_style)
  ours, theirs = models.load_tokenizer(str(tmp_path)), transformers.AutoTokenizer.from_pretrained(tmp_path)
  from r1jax.data.templates import render_model_chat
  for messages in MESSAGES:
    for gen in (True, False):
      want = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
      assert render_model_chat(ours.chat_template, messages, add_generation_prompt=gen, bos_token=ours.bos_token,
                               eos_token=ours.eos_token) == want
  q = "Natalia sold clips to 48 of her friends in April. How many?"
  for name, content in (("chat", q), ("chat_boxed", f"{q}\n\n{BOXED_INSTRUCTION}")):
    template = get_template(name, ours)
    prompt = theirs.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                        add_generation_prompt=True)
    assert template(q) == prompt
    assert template.response_prefix == ("<think>\n" if r1_style else "")
    assert ours.encode(prompt) == theirs(prompt, add_special_tokens=False)["input_ids"]
    ids = ours.encode(prompt, add_bos=True)
    assert ids.count(theirs.bos_token_id) == 1 if r1_style else ids == ours.encode(prompt)
  assert set(ours.stop_ids) == set(json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"])


def test_the_chat_templates_need_a_tokenizer_with_one(tmp_path):
  with pytest.raises(ValueError, match="renders the model's own chat template, but no tokenizer was given"):
    get_template("chat")
  from r1jax.testing import FakeTokenizer
  with pytest.raises(ValueError, match="its tokenizer has none"):
    get_template("chat_boxed", FakeTokenizer())


def _hf_logits(path, tokens):
  model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens))).logits.numpy()


def _r1jax_logits(cfg, variables, tokens):
  t = jnp.asarray(tokens)
  pos = jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape)
  return np.asarray(jax.jit(forward, static_argnums=0)(cfg, variables, t, jnp.ones_like(t), pos))


def _grpo_config(init, **rl):
  c = grpo_config.get_config("runlocal")
  c.init, c.export_hf = init, True
  c.task = dict(name="gsm8k")
  c.num_train_problems, c.num_eval_problems = 8, 0
  c.rl.update(num_steps=2, batch_size=2, group_size=2, max_prompt_len=160, max_new_tokens=8, checkpoint_every=1,
              template="chat_boxed", **rl)
  return c


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "qwen3"])   # qwen3: the scripts' chain below
def test_grpo_from_a_hugging_face_model_and_back(family, tmp_path):
  """GRPO (2 steps on GSM8K prompts in the model's chat template) from hf:DIR (qwen2 with LoRA adapters): the
  export carries the tokenizer, and its Hugging Face directory loads in transformers with the logits of the
  exported variables and the source's tokenizer files."""
  hf = tiny_hf_model(tmp_path / "hf", family)
  c = _grpo_config(f"hf:{hf}")
  if family == "qwen2":                          # LoRA adapters on a frozen base, exported merged
    c.rl.lora.update(rank=4, alpha=8.0)
  out = standalone.run_grpo(c, str(tmp_path / "grpo"))
  cfg, variables, meta = load_model(out, ModelConfig)
  assert meta["init"] == f"hf:{hf}"
  assert models.parse(out).tokenizer_path() == os.path.join(out, "hf")
  carried = sorted(f.name for f in pathlib.Path(out, "hf").iterdir())       # the side files, never the weights
  assert "tokenizer.json" in carried and not [n for n in carried if n.endswith(".safetensors")], carried
  recs = [json.loads(l) for l in open(tmp_path / "grpo" / "metrics.jsonl")]
  assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2]
  exported = tmp_path / "grpo" / "hf"
  for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    assert (exported / name).read_bytes() == (hf / name).read_bytes(), name
  src_cfg, out_cfg = (json.loads((d / "config.json").read_text()) for d in (hf, exported))
  assert out_cfg["model_type"] == src_cfg["model_type"] and out_cfg["eos_token_id"] == src_cfg["eos_token_id"]
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24))
  np.testing.assert_allclose(_hf_logits(exported, tokens), _r1jax_logits(cfg, variables, tokens), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_the_experiment_scripts_chain_from_a_hugging_face_model(tmp_path):
  """The real scripts, each given only hf:DIR or the previous job's export (the tokenizer travels with the
  models): GRPO on GSM8K (configs/grpo_gsm8k.py's tiny preset, which then evaluates the source and the policy
  on GSM8K and MATH-500), rejection sampling from its export, LoRA SFT of the Hugging Face model on the traces
  (configs/sft_hf.py; exported merged, and back to Hugging Face), distillation of another Hugging Face model
  from it on the same traces (configs/distill_hf.py), and evaluation of the source and both results on GSM8K test."""
  hf = tiny_hf_model(tmp_path / "hf", "qwen3")
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}

  def run(name, *overrides, config=None):
    proc = subprocess.run([sys.executable, "-m", f"experiments.{name}",
                           f"--config={config or f'configs/{name}.py:runlocal'}", f"--workdir={tmp_path / name}",
                           *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

  gsm8k = ["--config.task.name=gsm8k"]           # the arithmetic options left in the section are ignored
  run("grpo", f"--config.init=hf:{hf}", config="configs/grpo_gsm8k.py:tiny")
  grpo_model = tmp_path / "grpo" / "model"
  for name in ("gsm8k", "math500"):               # the preset's evaluation of the source and the policy
    results = json.loads((tmp_path / "grpo" / f"eval_{name}" / "results.json").read_text())
    assert list(results) == ["base", "grpo"] and all(r["num_examples"] == 4 for r in results.values())
  run("rejection_sample", f"--config.model={grpo_model}", "--config.num_problems=4", "--config.load.dtype=",
      "--config.load.param_dtype=", "--config.rejection.num_samples=2", "--config.rejection.batch_size=4",
      "--config.rejection.max_prompt_len=160", "--config.rejection.max_new_tokens=8",
      "--config.rejection.min_rewards=()",
      config="configs/rejection_sample.py:gsm8k")
  traces = [json.loads(l) for l in open(tmp_path / "rejection_sample" / "traces.jsonl")]
  assert len(traces) == 8 and all(t["prompt"].startswith("<|im_start|>system\n") for t in traces)   # 2 kept per problem
  traces_file = tmp_path / "rejection_sample" / "traces.jsonl"
  run("sft", f"--config.init=hf:{hf}", f"--config.data={traces_file}", "--config.sft.lora.rank=4",
      config="configs/sft_hf.py:tiny")
  student = tiny_hf_model(tmp_path / "student", "qwen3", seed=1)          # the same tokenizer, other weights
  run("distill", f"--config.teacher=hf:{hf}", f"--config.student_init=hf:{student}", f"--config.data={traces_file}",
      config="configs/distill_hf.py:tiny")
  assert (tmp_path / "distill" / "hf" / "tokenizer.json").read_bytes() == (hf / "tokenizer.json").read_bytes()
  run("evaluate", f"--config.models=base=hf:{hf},grpo={grpo_model},sft=hf:{tmp_path / 'sft' / 'hf'}", *gsm8k,
      "--config.split=test", "--config.num_problems=4", "--config.template=chat_boxed",
      "--config.eval.max_prompt_len=160", "--config.eval.max_new_tokens=8", "--config.eval.num_samples=2")
  results = json.loads((tmp_path / "evaluate" / "results.json").read_text())
  assert list(results) == ["base", "grpo", "sft"] and all(r["num_examples"] == 4 for r in results.values())
  cfg, variables, _ = load_model(tmp_path / "sft" / "model", ModelConfig)
  tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 16))
  np.testing.assert_allclose(_hf_logits(tmp_path / "sft" / "hf", tokens), _r1jax_logits(cfg, variables, tokens),
                             atol=1e-4, rtol=0)


def test_a_model_is_named_by_its_directory_or_a_prefix(tmp_path):
  """Exports, Hugging Face directories and Orbax conversions resolve by content or prefix, to the same
  variables; the tokenizer comes with each; a wrong prefix or a non-model directory is refused, naming it."""
  hf = tiny_hf_model(tmp_path / "hf", "qwen2")
  orbax = convert.convert(from_hf=hf, to_orbax=tmp_path / "orbax")
  src = models.parse(str(hf))
  cfg, variables, _ = src.load()
  export = save_model(tmp_path / "export", cfg, variables, files=models.export_files(str(hf), src))
  for ref, kind in ((str(hf), "hf"), (f"hf:{hf}", "hf"), (str(orbax), "orbax"), (f"orbax:{orbax}", "orbax"),
                    (export, "export"), (f"export:{export}", "export")):
    source = models.parse(ref)
    assert source.kind == kind and source.config() == cfg, ref
    jax.tree.map(np.testing.assert_array_equal, source.load()[1], variables)
    assert models.load_tokenizer(source.tokenizer_path()).encode("<think> 12") == \
        models.load_tokenizer(str(hf)).encode("<think> 12")
  # Load settings (a config's `load` section) apply to every kind: compute dtype, parameter dtype, remat.
  mixed = (("dtype", "bfloat16"), ("param_dtype", "float32"), ("remat", "full"))
  for ref in (str(hf), export, str(orbax)):
    cfg2, v2, _ = models.parse(ref, settings=mixed).load()
    assert (cfg2.dtype, cfg2.param_dtype, cfg2.remat) == ("bfloat16", "float32", "full")
    assert cfg2 == models.parse(ref, settings=mixed).config()
    assert {x.dtype for x in jax.tree.leaves(v2["params"])} == {np.dtype("float32")}
  cfg3, v3, _ = models.parse(export, settings=(("param_dtype", "bfloat16"),)).load()
  assert cfg3.param_dtype == "bfloat16" and {x.dtype for x in jax.tree.leaves(v3["params"])} == {np.dtype(jnp.bfloat16)}
  with pytest.raises(FileNotFoundError, match=r"x='hf:.*export' does not hold config\.json"):
    models.parse(f"hf:{export}", "x")
  with pytest.raises(FileNotFoundError, match=r"x='.*' is not a model directory"):
    models.parse(str(tmp_path), "x")
  for name in ("variables", "variables/x", "../x", "/tmp/x", "."):
    with pytest.raises(ValueError, match="bad name"):
      save_model(tmp_path / "bad", cfg, variables, files={name: str(hf / "tokenizer.json")})
  assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.tmp").exists()
  c = sft_config.get_config()                    # the tokenizer field overrides; empty takes the model's
  c.init = export
  assert models.tokenizer_input(c, models.parse(export), "t") == os.path.join(export, "hf")
  c.tokenizer = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="config.tokenizer=.*nope' does not exist"):
    models.tokenizer_input(c, models.parse(export), "t")
  c.tokenizer = ""
  with pytest.raises(ConfigFieldError, match="config.tokenizer is empty and no model gives one"):
    models.tokenizer_input(c, None, "t")
