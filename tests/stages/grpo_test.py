"""The RL stage end to end on a tiny config: metrics, resume after SIGKILL, SIGTERM, dynamic sampling."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from r1jax.checkpoint import CheckpointManager
from r1jax.config_utils import ConfigFieldError, build
from r1jax.stages.grpo import RLStageConfig
from r1jax.stages.writers import PREEMPTED_EXIT_CODE

sys.path.insert(0, os.path.dirname(__file__))
import _grpo_setup as setup  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "_grpo_setup.py")


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_two_steps_end_to_end(tmp_path):
  variables = setup.run(str(tmp_path), 2)
  recs = _metrics(str(tmp_path))
  assert [r["step"] for r in recs] == [1, 2]
  for key in ("reward", "accuracy", "format", "length", "kl", "clip_frac_low", "clip_frac_high",
              "zero_variance_groups", "expert_maxvio_mean", "time_rollout_s", "truncated"):
    assert key in recs[-1], key
  assert CheckpointManager(str(tmp_path / "checkpoints")).latest_step() == 2
  assert set(variables) == {"params", "router_bias"}
  events = os.listdir(tmp_path / "tensorboard")
  assert any(name.startswith("events.out.tfevents") for name in events)


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
  env["XLA_FLAGS"] = ""                       # one CPU device, like the in-process reference run
  return env


@pytest.mark.slow
def test_resume_after_sigkill_repeats_the_trajectory(tmp_path):
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  subprocess.run([sys.executable, WORKER, straight, "6"], check=True, env=_env(), timeout=600)
  proc = subprocess.Popen([sys.executable, WORKER, killed, "6"], env=_env())
  deadline = time.time() + 600
  while time.time() < deadline:               # kill as soon as step 3 is logged (its save may be in flight)
    if os.path.exists(os.path.join(killed, "metrics.jsonl")) and any(
        r["step"] >= 3 for r in _metrics(killed)):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert CheckpointManager(os.path.join(killed, "checkpoints")).latest_step() < 6
  subprocess.run([sys.executable, WORKER, killed, "6"], check=True, env=_env(), timeout=600)

  a, b = _metrics(straight), _metrics(killed)
  assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
  for ra, rb in zip(a[3:], b[3:]):
    for k in ("reward", "loss", "kl", "accuracy", "length"):
      assert ra[k] == rb[k], (ra["step"], k, ra[k], rb[k])
  sa = CheckpointManager(os.path.join(straight, "checkpoints")).restore(6)[0]
  sb = CheckpointManager(os.path.join(killed, "checkpoints")).restore(6)[0]
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
               sa["state"]["params"], sb["state"]["params"])


@pytest.mark.slow
def test_sigterm_leaves_a_restorable_checkpoint(tmp_path):
  workdir = str(tmp_path / "term")
  proc = subprocess.Popen([sys.executable, WORKER, workdir, "50"], env=_env())
  deadline = time.time() + 600
  while time.time() < deadline and not (os.path.exists(os.path.join(workdir, "metrics.jsonl"))
                                         and _metrics(workdir)):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  # Saved, then a documented non-zero status: not a crash (1), not a finished run (0).
  assert proc.wait(timeout=300) == PREEMPTED_EXIT_CODE == 75
  ckpt = CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = ckpt.latest_step()
  assert step is not None and step < 50
  state, _ = ckpt.restore(step)
  assert int(np.asarray(state["state"]["step"])) >= step


def test_dynamic_sampling_drops_zero_variance_groups_and_terminates(tmp_path, monkeypatch):
  from r1jax.stages import grpo
  trained_rewards = []
  real_update = grpo.grpo_update_rollout

  def spy(update, state, batch, rl, rng=None):
    trained_rewards.append((np.asarray(batch["active"]) > 0, np.asarray(batch["rewards"])))
    return real_update(update, state, batch, rl, rng)

  monkeypatch.setattr(grpo, "grpo_update_rollout", spy)
  setup.run(str(tmp_path), 2, dynamic_sampling=True, max_refills=2)
  recs = _metrics(str(tmp_path))
  assert len(recs) == 2                                     # terminated: bounded refills
  for r in recs:
    assert r["rollouts"] <= 3
  for active, rewards in trained_rewards:                   # every active group has reward variance
    g = 4
    for grp in range(len(active) // g):
      rows = slice(grp * g, (grp + 1) * g)
      if active[rows].any():
        assert active[rows].all() and np.ptp(rewards[rows]) > 0


@pytest.mark.parametrize("estimator", ["rloo", "dr_grpo"])
def test_the_advantage_estimator_is_the_configured_one(tmp_path, monkeypatch, estimator):
  from r1jax.stages import grpo
  from r1jax.rl import advantages, step
  real_rollout, real_make_update, real_update_rollout = grpo.rollout, grpo.make_grpo_update, grpo.grpo_update_rollout
  built, seen = {}, []

  def rollout(*args, **kwargs):        # rewards with variance in every group (a tiny random model has none)
    r = real_rollout(*args, **kwargs)
    return dataclasses.replace(r, rewards=(np.arange(len(r.rewards)) % 3).astype(np.float32))

  def make_grpo_update(*args, **kwargs):
    built.update(kwargs)
    return real_make_update(*args, **kwargs)

  def update_rollout(update, state, batch, rl, rng=None):
    seen.append(batch)
    return real_update_rollout(update, state, batch, rl, rng)

  monkeypatch.setattr(grpo, "rollout", rollout)
  monkeypatch.setattr(grpo, "make_grpo_update", make_grpo_update)
  monkeypatch.setattr(grpo, "grpo_update_rollout", update_rollout)
  setup.run(str(tmp_path), 1, advantage_estimator=estimator)
  assert built["advantage_estimator"] == estimator and built["group_size"] == 4
  batch, = seen
  rewards = np.asarray(batch["rewards"])
  # What the step computes from this batch (the same function it traces).
  adv = np.asarray(step.minibatch_in_step(batch, group_size=4, estimator=estimator)["advantages"])
  np.testing.assert_allclose(adv, advantages.ADVANTAGE_ESTIMATORS[estimator](rewards, 4), rtol=1e-6, atol=1e-7)
  assert not np.allclose(adv, advantages.group_advantages(rewards, 4), atol=1e-3)   # not GRPO's


@pytest.mark.parametrize("overrides,fragment", [
    (dict(group_size=1), "config.rl: RLStageConfig.group_size=1"),
    (dict(batch_size=0), "RLStageConfig.batch_size=0"),
    (dict(unknown_knob=3), "config.rl: unknown key(s) ['unknown_knob']"),
    (dict(grpo=dict(beta=-1.0)), "config.rl.grpo: GRPOConfig.beta=-1.0"),
    (dict(grpo=dict(kl_estimator="k9")), "GRPOConfig.kl_estimator='k9'"),
    (dict(advantage_estimator="ppo"), "RLStageConfig.advantage_estimator='ppo': must be one of"),
    (dict(reward_weights=(("acuracy", 1.0),)), "unknown reward 'acuracy'"),
    (dict(optim=dict(learning_rate=-1.0)), "OptimConfig.learning_rate=-1.0"),
    (dict(input_shards=3), "RLStageConfig.input_shards=3: must be 0 (one per batch slice of the mesh) or a "
                           "divisor of batch_size=8"),
])
def test_config_validates_before_compilation(overrides, fragment):
  with pytest.raises(ConfigFieldError) as e:
    build(RLStageConfig, {"num_steps": 2, **overrides}, "config.rl")
  assert fragment in str(e.value)


def test_the_stage_logs_the_sampler_trainer_mismatch_with_and_without_the_is_correction(tmp_path):
  """grpo.rollout_is on: the stage recomputes the sampling policy's log-probs with the trainer's forward, and
  the mismatch metrics land in metrics.jsonl; off, the first update of each step measures the same mismatch on
  its rows for free. In float32 on one device the sampler's log-probs are the model's: the mismatch is at
  float rounding and no token is truncated."""
  from tests.stages import _grpo_setup as g
  for name, extra in (("is", dict(rollout_is="token_tis", rollout_is_cap=2.0)), ("off", {})):
    g.run(str(tmp_path / name), 2, grpo=dict(beta=0.04, num_iterations=2, num_minibatches=2, temperature=1.0,
                                             **extra))
    with open(tmp_path / name / "metrics.jsonl") as f:
      recs = [json.loads(l) for l in f if l.strip()]
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
      assert 0.0 <= r["mismatch_abs_mean"] <= r["mismatch_abs_max"] <= 1e-5, (name, r)
      assert abs(r["mismatch_kl"]) <= 1e-9
      if name == "is":
        assert r["is_clipped_frac"] == 0.0 and abs(r["is_weight_mean"] - 1.0) <= 1e-5
      else:
        assert "is_weight_mean" not in r
