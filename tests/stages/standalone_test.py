"""The standalone jobs (r1jax.stages.standalone: SFT, distillation, GRPO) end to end on tiny models into temp
workdirs, with their inputs as config fields; an empty required input or a missing path fails first."""
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import distill as distill_config
from configs import sft as sft_config
from r1jax.checkpoint import is_model, load_model
from r1jax.config_utils import ConfigFieldError
from r1jax.data.jsonl import JsonlError
from r1jax.model import ModelConfig
from r1jax.stages import exported, models, standalone

sys.path.insert(0, os.path.dirname(__file__))
import _jobs  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("_jobs_worker.py")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A tokenizer, a tiny exported teacher, and a JSONL of traces as rejection sampling writes them."""
  return _jobs.make_setup(tmp_path_factory.mktemp("sft_setup"))


_small = _jobs.small


def test_sft_from_a_checkpoint_then_skips_when_finished(setup, tmp_path, monkeypatch):
  tok_path, data, teacher = setup
  c = _small(sft_config.get_config("runlocal"), "sft")
  c.data, c.tokenizer, c.init = data, tok_path, teacher
  out = standalone.run_sft(c, str(tmp_path / "sft"))
  assert is_model(out)
  cfg, variables, meta = load_model(out, ModelConfig)
  assert cfg == load_model(teacher, ModelConfig)[0] and meta["init"] == teacher
  recs = [json.loads(l) for l in open(tmp_path / "sft" / "metrics.jsonl")]
  assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3]
  t0 = jax.tree.leaves(load_model(teacher, ModelConfig)[1])
  assert any(not np.array_equal(a, b) for a, b in zip(t0, jax.tree.leaves(variables)))   # it trained

  monkeypatch.setattr(exported, "run_lm_stage", lambda *a, **k: pytest.fail("a finished stage ran again"))
  assert standalone.run_sft(c, str(tmp_path / "sft")) == out


def test_distill_with_token_level_kd(setup, tmp_path):
  tok_path, data, teacher = setup
  c = _small(distill_config.get_config("runlocal"), "distill")
  c.student.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2)
  c.data, c.tokenizer, c.teacher = data, tok_path, teacher
  out = standalone.run_distill(c, str(tmp_path / "student"))
  cfg, _, meta = load_model(out, ModelConfig)
  assert cfg.attention == "gqa" and not cfg.is_moe and meta["teacher"] == teacher
  recs = [json.loads(l) for l in open(tmp_path / "student" / "metrics.jsonl")]
  assert all(np.isfinite(r["kd_kl"]) and r["kd_kl"] >= 0 for r in recs if r["kind"] == "train")


def test_bad_inputs_fail_before_training(setup, tmp_path):
  tok_path, data, teacher = setup
  c = sft_config.get_config()
  c.data, c.tokenizer = data, tok_path
  c.sft.batch_size = 0
  with pytest.raises(ConfigFieldError, match="config.sft: LMStageConfig.batch_size=0"):
    standalone.run_sft(c, str(tmp_path / "x"))
  c.sft.batch_size, c.sft.input_shards = 16, 5
  with pytest.raises(ConfigFieldError, match="config.sft: LMStageConfig.input_shards=5: .* divisor of batch_size=16"):
    standalone.run_sft(c, str(tmp_path / "x"))
  bad = tmp_path / "bad.jsonl"
  bad.write_text(open(data).readline() + "{not json\n")
  c = sft_config.get_config()
  c.data, c.tokenizer = str(bad), tok_path
  with pytest.raises(JsonlError, match=r"bad.jsonl:2"):
    standalone.run_sft(c, str(tmp_path / "y"))
  c = distill_config.get_config()
  c.data, c.tokenizer, c.teacher = data, tok_path, teacher
  c.distill.distill.kd_weight = 2.0
  with pytest.raises(ConfigFieldError, match="kd_weight=2.0"):
    standalone.run_distill(c, str(tmp_path / "z"))
  assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


def _inputs(setup):
  """Each job's config with every input set to a real one (optional ones included)."""
  from configs import grpo as grpo_config
  from configs import rejection_sample as rejection_config
  tok_path, data, teacher = setup
  sft = sft_config.get_config()
  sft.data, sft.tokenizer, sft.init = data, tok_path, teacher
  distill = distill_config.get_config()
  distill.data, distill.tokenizer, distill.teacher, distill.student_init = data, tok_path, teacher, teacher
  grpo = grpo_config.get_config()
  grpo.init, grpo.tokenizer = teacher, tok_path
  rejection = rejection_config.get_config()
  rejection.model, rejection.tokenizer = teacher, tok_path
  return {"sft": (standalone.run_sft, sft, ("data", "tokenizer"), ("data", "tokenizer", "init")),
          "distill": (standalone.run_distill, distill, ("data", "tokenizer", "teacher"),
                      ("data", "tokenizer", "teacher", "student_init")),
          "grpo": (standalone.run_grpo, grpo, ("init", "tokenizer"), ("init", "tokenizer")),
          "rejection_sample": (standalone.run_rejection_sample, rejection, ("model", "tokenizer"),
                               ("model", "tokenizer"))}


@pytest.mark.parametrize("job", ["sft", "distill", "grpo", "rejection_sample"])
def test_missing_inputs_fail_first_naming_the_field(job, setup, tmp_path, monkeypatch):
  """An empty required input, a path that does not exist, or a directory that is not a model fails before
  any tokenizer, data or model is read, naming the config field and the path. The tokenizer may be left
  empty only when the model carries one (these exports do not)."""
  def fail(*args, **kwargs):
    raise AssertionError("work started before the inputs were checked")

  for fn in ("tokenizer", "sft_data", "lm_stage", "rl_stage"):
    monkeypatch.setattr(exported, fn, fail)
  monkeypatch.setattr(standalone, "rejection_sample", fail)
  monkeypatch.setattr(models, "load_tokenizer", fail)
  monkeypatch.setattr(models.ModelSource, "load", fail)
  run, c, required, paths = _inputs(setup)[job]
  workdir, tmp = str(tmp_path / "w"), re.escape(str(tmp_path))
  for field in required:
    bad = c.copy_and_resolve_references()
    bad[field] = ""
    message = (r"^config\.tokenizer is empty and .* carries no tokenizer: .*--config\.tokenizer="
               if field == "tokenizer" else rf"^config\.{field} is required: .*--config\.{field}=")
    with pytest.raises(ConfigFieldError, match=message):
      run(bad, workdir)
  for field in paths:
    bad = c.copy_and_resolve_references()
    bad[field] = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=rf"config\.{field}.*'{tmp}/nope' does not exist"):
      run(bad, workdir)
  for field in set(paths) - {"data", "tokenizer"}:          # the model directories
    bad = c.copy_and_resolve_references()
    bad[field] = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"config\.{field}='{tmp}' is not a model directory: expected "
                       r"export: model_config\.json \+ variables/"):
      run(bad, workdir)
    bad[field] = f"hf:{tmp_path}"
    with pytest.raises(FileNotFoundError, match=rf"config\.{field}='hf:{tmp}' does not hold config\.json"):
      run(bad, workdir)
  if "data" in paths:                                        # every comma-separated file is checked
    bad = c.copy_and_resolve_references()
    bad.data = f"{c.data},{tmp_path}/nope.jsonl"
    with pytest.raises(FileNotFoundError, match=rf"config\.data: '{tmp}/nope\.jsonl' does not exist"):
      run(bad, workdir)
  assert not (tmp_path / "w").exists()


def test_grpo_experiment_from_an_exported_model(setup, tmp_path):
  from configs import grpo as grpo_config
  tok_path, _, teacher = setup
  c = grpo_config.get_config("runlocal")
  c.num_train_problems, c.num_eval_problems = 16, 0
  c.rl.update(num_steps=2, batch_size=2, group_size=2, max_new_tokens=6, checkpoint_every=1)
  c.rl.eval.update(num_examples=4, batch_size=4, max_new_tokens=6, num_samples=2)
  c.init, c.tokenizer = teacher, tok_path
  out = standalone.run_grpo(c, str(tmp_path / "grpo"))
  assert is_model(out) and load_model(out, ModelConfig)[2]["init"] == teacher
  recs = [json.loads(l) for l in open(tmp_path / "grpo" / "metrics.jsonl")]
  assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2]
  with pytest.raises(ConfigFieldError, match="config.rl: RLStageConfig.group_size=1"):
    c.rl.group_size = 1
    standalone.run_grpo(c, str(tmp_path / "g2"))
  assert not (tmp_path / "g2").exists()


def _two_processes(root):
  """_jobs_worker.py (every job on {data: 2, expert: 4}) as 2 processes x 4 fake CPU devices, started by
  python -m r1jax.sharding.launch (jax.distributed over loopback)."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "R1JAX_", "TPU_", "JAX_COMPILATION_CACHE", "XLA_FLAGS"))}
  env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
  root.mkdir()
  return subprocess.Popen([sys.executable, "-m", "r1jax.sharding.launch", "--num_processes=2",
                           "--devices_per_process=4", "--", sys.executable, str(WORKER), str(root)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _same_jobs(a, b, da, db):
  """Two runs of _jobs.jobs_on (their returns a, b, their directories da, db) wrote the same exported
  variables and per-step metrics (float rounding), traces and evaluation reports."""
  for job in ("sft", "distill", "grpo"):
    va, vb = load_model(a[job], ModelConfig)[1], load_model(b[job], ModelConfig)[1]
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=job), va, vb)
    ma = [json.loads(l) for l in open(da / job / "metrics.jsonl")]
    mb = [json.loads(l) for l in open(db / job / "metrics.jsonl")]
    assert len(ma) == len(mb) >= 2, job                   # one writer in a multi-process job: no line twice
    for ra, rb in zip(ma, mb):
      for k, v in ra.items():
        if "time" in k or k == "it_per_s":
          continue
        assert rb[k] == (pytest.approx(v, rel=1e-4, abs=1e-5) if isinstance(v, float) else v), (job, k)
  strip = lambda t: {k: v for k, v in t.items() if k != "source"}
  assert [strip(t) for t in a["traces"]] == [strip(t) for t in b["traces"]] and a["traces"]
  for name in ("sft", "grpo"):
    ra = {k: v for k, v in a["eval"][name].items() if k not in ("eval_setup", "model_metadata", "model_ref")}
    rb = {k: v for k, v in b["eval"][name].items() if k not in ("eval_setup", "model_metadata", "model_ref")}
    assert ra == rb, name


@pytest.mark.slow
def test_every_job_on_a_mesh_and_as_two_processes_gives_the_one_device_results(setup, tmp_path, monkeypatch):
  """--config.mesh.data=2 --config.mesh.expert=4 on 8 fake devices: each job runs on the mesh (exported
  models loaded onto it, routed experts split 4 ways) and writes what the one-device job writes: the same
  per-step metrics and exported variables to float rounding, the same traces and evaluation reports. The
  same jobs as 2 processes x 4 devices write what 1 process with 8 devices writes, each process reading
  only its own one of the two input shards of SFT, distillation and GRPO."""
  from r1jax.data.pipeline import ShardedBatches
  from r1jax.stages import evaluate
  two = _two_processes(tmp_path / "two")                        # runs beside the in-process runs
  # On the mesh each of the 2 data slices reads its own input shard: the one-device run reads the same 2.
  one = _jobs.jobs_on({}, setup, tmp_path / "one", input_shards=2)
  meshes, reads = [], []                         # the mesh each stage function was handed; the shards read

  def spy(module, name):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
      meshes.append((name, kwargs.get("mesh")))
      return real(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapper)

  for module, name in ((exported, "run_lm_stage"), (exported, "run_rl_stage"), (standalone, "rejection_sample"),
                       (evaluate, "evaluate")):
    spy(module, name)
  real_init = ShardedBatches.__init__

  def recording_init(self, make, shards, shard_count):
    real_init(self, make, shards, shard_count)
    reads.append({"shards": list(self.shards), "count": self.shard_count})
  monkeypatch.setattr(ShardedBatches, "__init__", recording_init)
  eight = _jobs.jobs_on({"data": 2, "expert": 4}, setup, tmp_path / "eight")
  assert [n for n, _ in meshes] == ["run_lm_stage"] * 2 + ["run_rl_stage", "rejection_sample"] + ["evaluate"] * 2
  assert all(dict(m.shape) == {"data": 2, "fsdp": 1, "expert": 4, "tensor": 1} for _, m in meshes)
  assert reads == [{"shards": [0, 1], "count": 2}] * 3          # SFT, distillation, GRPO: both shards here
  _same_jobs(one, eight, tmp_path / "one", tmp_path / "eight")

  out, _ = two.communicate(timeout=900)
  assert two.returncode == 0, out[-4000:]
  assert out.count("DONE") == 2, out[-2000:]
  worker_reads = lambda p: [json.loads(l) for l in open(tmp_path / "two" / f"shards-{p}.jsonl")]
  assert worker_reads(0) == [{"shards": [0], "count": 2}] * 3 and worker_reads(1) == [{"shards": [1], "count": 2}] * 3
  run = tmp_path / "two" / "run"
  rs = [json.loads(l) for l in open(run / "rs" / "traces.jsonl")]
  results = json.loads((run / "eval" / "results.json").read_text())
  two_out = {"sft": str(run / "sft" / "model"), "distill": str(run / "distill" / "model"),
             "grpo": str(run / "grpo" / "model"), "traces": rs, "eval": results}
  _same_jobs(eight, two_out, tmp_path / "eight", run)


def test_a_tokenizer_with_more_ids_than_the_model_is_refused_naming_both_sizes():
  from r1jax.testing import FakeTokenizer, tiny_model_config
  with pytest.raises(ValueError, match=r"tokenizer 't.model' has 64 ids but the model 'm' only 32"):
    models.check_vocab(FakeTokenizer(vocab_size=64), tiny_model_config(vocab_size=32), "m", "t.model")
  models.check_vocab(FakeTokenizer(vocab_size=64), tiny_model_config(vocab_size=80), "m", "t.model")  # padded: fine
