"""Distillation: the teacher's top-k on a packed batch, the combined objective vs numpy, and the stage."""
import jax
import numpy as np
import pytest

from r1jax.data.pipeline import packed_lm_batches
from r1jax.model import ModelConfig, forward, init_variables
from r1jax.model.transformer import apply_model
from r1jax.testing import FakeTokenizer
from r1jax.stages import lm
from r1jax.train.distill import DistillConfig, distill_objective, make_teacher_topk
from r1jax.train.lm import LMConfig

TEACHER = ModelConfig.preset("tiny")
STUDENT = ModelConfig.preset("tiny_qwen2", vocab_size=64)
TEXTS = [{"prompt": f"Q: {a}+{b}\nA: ", "completion": str(a + b)} for a in range(10) for b in range(10)]


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _batch(seed=0):
  it = packed_lm_batches(TEXTS, FakeTokenizer(vocab_size=64), batch_size=2, seq_len=32, seed=seed)
  return {k: np.asarray(v) for k, v in next(it).items() if isinstance(v, np.ndarray) and v.dtype != object}


def _logits(cfg, variables, b):
  return np.asarray(apply_model(cfg, variables, b["tokens"], attention_mask=b["segment_ids"] > 0,
                                positions=b["positions"], segment_ids=b["segment_ids"]).logits)


def test_teacher_topk_and_objective_match_numpy():
  b = _batch()
  t_vars = init_variables(TEACHER, jax.random.key(0))
  s_vars = init_variables(STUDENT, jax.random.key(1))
  dc = DistillConfig(top_k=5, kd_weight=0.3, temperature=1.5)
  out = make_teacher_topk(TEACHER, dc)(t_vars, b)
  t_logp = _log_softmax(_logits(TEACHER, t_vars, b))
  want_ids = np.argsort(-t_logp, -1)[..., :5]
  np.testing.assert_array_equal(np.sort(out["teacher_ids"], -1), np.sort(want_ids, -1))
  np.testing.assert_allclose(out["teacher_logp"], np.take_along_axis(t_logp, np.asarray(out["teacher_ids"]), -1),
                             atol=1e-5)

  loss, (metrics, _) = jax.jit(distill_objective(STUDENT, LMConfig(balance_loss_coef=0.0), dc))(s_vars, out)
  s = _logits(STUDENT, s_vars, b)
  mask = b["loss_mask"] > 0
  ce = -np.take_along_axis(_log_softmax(s), b["targets"][..., None], -1)[..., 0][mask].mean()
  q_log = _log_softmax(np.asarray(out["teacher_logp"], np.float64) / 1.5)
  p_log = np.take_along_axis(_log_softmax(s / 1.5), np.asarray(out["teacher_ids"]), -1)
  kl = (np.exp(q_log) * (q_log - p_log)).sum(-1)[mask].mean()
  np.testing.assert_allclose(metrics["ce"], ce, rtol=1e-4)
  np.testing.assert_allclose(metrics["kd_kl"], kl, rtol=1e-4)
  np.testing.assert_allclose(loss, 0.7 * ce + 0.3 * kl, rtol=1e-4)


def test_distill_stage_pulls_student_towards_teacher(tmp_path):
  t_vars = init_variables(TEACHER, jax.random.key(0))
  sc = lm.LMStageConfig(num_steps=30, batch_size=4, seq_len=32, log_every=1, checkpoint_every=30,
                        distill=DistillConfig(top_k=8, kd_weight=1.0),
                        optim=lm.OptimConfig(learning_rate=3e-3, warmup_steps=0, total_steps=30))
  s0 = init_variables(STUDENT, jax.random.key(1))
  s_vars = lm.run_lm_stage(STUDENT, sc, examples=TEXTS, tokenizer=FakeTokenizer(vocab_size=64),
                           workdir=str(tmp_path), initial_variables=s0, teacher=(TEACHER, t_vars), verbose=False)
  from r1jax.stages.writers import MetricsWriter
  recs = MetricsWriter(str(tmp_path / "metrics.jsonl")).read("train")
  assert recs[-1]["kd_kl"] < 0.7 * recs[0]["kd_kl"], [r["kd_kl"] for r in recs]
  # On another batch the top-k KL to the teacher fell as well.
  b = make_teacher_topk(TEACHER, sc.distill)(t_vars, _batch(seed=1))
  objective = jax.jit(distill_objective(STUDENT, LMConfig(balance_loss_coef=0.0), sc.distill))
  kl = lambda s: float(objective(s, b)[1][0]["kd_kl"])
  assert kl(s_vars) < 0.8 * kl(s0)


def test_distill_config_errors(tmp_path):
  with pytest.raises(ValueError, match="DistillConfig.kd_weight=1.5"):
    DistillConfig(kd_weight=1.5)
  with pytest.raises(ValueError, match="DistillConfig.top_k=-1"):
    DistillConfig(top_k=-1)
  sc = lm.LMStageConfig(num_steps=1, distill=DistillConfig(top_k=4))
  with pytest.raises(ValueError, match="needs a teacher"):
    lm.run_lm_stage(STUDENT, sc, examples=TEXTS, tokenizer=FakeTokenizer(vocab_size=64), workdir=str(tmp_path))
  with pytest.raises(ValueError, match="shared tokenizer"):
    lm.run_lm_stage(STUDENT, sc, examples=TEXTS, tokenizer=FakeTokenizer(vocab_size=64), workdir=str(tmp_path),
                    teacher=(TEACHER.replace(vocab_size=80), None))
