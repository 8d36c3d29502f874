"""GRPO learns: training reward and held-out accuracy rise by stated margins, and only with a correct update.

The other RL tests check plumbing (shapes, metrics in range, resume); a GRPO that did not learn, or that
learned backwards, would pass them. This test runs the real path (`run_rl_stage`: the sampler, the
accuracy reward, group advantages, reference log-probs and the clipped GRPO loss with its KL term,
two epochs of two minibatches, AdamW) on the tiny preset, and `evaluate` on problems never trained on.

Task: "Digit in qa7xk?" -> "7": four letters and one digit 1-9 at a random place; the answer is the
digit. Reading it is a short function of the prompt that carries over to unseen strings. The 64
held-out problems are used by neither the warm start nor RL.

Warm start (supervised, `run_lm_stage`), so that RL has something to reinforce (from a start that only
knows the format, answering a random digit, 40 GRPO steps did not teach this tiny model to read):
  1. READ_STEPS steps on correct answers: the model learns the format ("</think>" digit eos) and to
     read the digit;
  2. GUESS_STEPS steps on the same questions answered with the fixed guess "0" (never right) and only
     READ_SHARE of the time with the digit, each question five times with answers drawn afresh.
The model keeps both behaviours but prefers the guess: held-out pass@1 starts at 7-16% over sampled
completions and at 0% greedy, the training reward at 5-15%. Nothing but the reward tells the policy that
reading beats guessing; the last supervised data it saw says the opposite.

Why the margins mean something: with a no-op update (learning_rate=0) the held-out numbers cannot move
at all (same parameters, same evaluation keys) and the training reward moves by batch-to-batch noise
only (at most +0.08 over 8 seeds); a sign-flipped update (accuracy weight -1, so every advantage is
negated) drives the policy to the guess, near 0%. Both run here and must miss the margins. The real
update clears them on every seed tried, the worst by more than 0.2 (numbers below). The "reward"
compared is the logged accuracy part of the reward: with weight 1 it is the reward itself, and it stays
the accuracy when the weight is flipped.
"""
import json
import os
import random

import jax
import numpy as np
import pytest

from r1jax.eval.evaluate import EvalConfig, evaluate
from r1jax.model import ModelConfig, init_variables
from r1jax.stages.grpo import RLStageConfig, run_rl_stage
from r1jax.rl.step import GRPOConfig
from r1jax.testing import FakeTokenizer
from r1jax.train.optim import OptimConfig
from r1jax.stages.lm import LMStageConfig, run_lm_stage

MODEL = ModelConfig.preset("tiny")
TOKENIZER = FakeTokenizer(vocab_size=64)
SEED = 0
GUESS = "0"                            # the warm start's favourite answer; never correct
READ_SHARE = 0.15                      # share of second-phase answers that are the digit
READ_STEPS, GUESS_STEPS = 250, 150     # supervised steps of the two warm-start phases
NUM_TRAIN, NUM_HELDOUT = 600, 64
B, G, MAX_PROMPT, MAX_NEW = 16, 8, 28, 4
RL_STEPS, RL_LR = 20, 3e-3

# Measured on 2 CPU cores. Per seed: training reward (step 1 -> mean of the last 5 of 20 steps); held-out
# pass@1 sampled (64 problems x 8 samples, before -> after); held-out pass@1 greedy (before -> after).
#   seed  GRPO: reward  sampled    greedy          lr=0: reward  sampled    weight -1: reward  sampled
#   0     .05->.94   .07->.89   .00->.88          .05->.09   .07->.07      .05->.00   .07->.00
#   1     .15->.96   .10->.95   .00->1.0          .15->.11   .10->.10      .15->.00   .10->.00
#   2     .14->.98   .10->.93   .00->1.0          .14->.12   .10->.10      .14->.00   .10->.00
#   3     .09->.94   .12->.92   .00->.89          .09->.12   .12->.12      .09->.00   .12->.00
#   4     .12->.89   .15->.87   .00->.89          .12->.13   .15->.15      .12->.00   .15->.00
#   5     .13->.87   .15->.90   .00->1.0          .13->.12   .15->.15      .13->.00   .15->.00
#   6     .11->.94   .14->.96   .00->1.0          .11->.18   .14->.14      .11->.01   .14->.00
#   7     .13->.96   .14->.96   .00->1.0          .13->.14   .14->.14      .13->.00   .14->.00
# (greedy stays at .00 under both broken updates.)
# Smallest GRPO rises: reward +0.74 (seed 5), held-out sampled +0.72 (seed 4), greedy +0.88.
MAX_START = 0.3        # training reward and held-out accuracy must start far from the ceiling
REWARD_MARGIN = 0.5    # training reward: mean of the last 5 steps - step 1 (the policy before any update)
HELDOUT_MARGIN = 0.5   # held-out pass@1, sampled and greedy: after - before


def problems():
  """NUM_TRAIN training and NUM_HELDOUT held-out problems, all distinct: the two sets share none."""
  rng, seen, out = random.Random(1234), set(), []
  while len(out) < NUM_TRAIN + NUM_HELDOUT:
    chars = [rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4)]
    digit = str(rng.randrange(1, 10))
    chars.insert(rng.randrange(5), digit)
    text = "".join(chars)
    if text not in seen:
      seen.add(text)
      out.append({"task": "find_digit", "verifier": "number", "question": f"Digit in {text}?", "answer": digit})
  return out[:NUM_TRAIN], out[NUM_TRAIN:]


def warm_start(train, seed, workdir):
  """The two supervised phases described in the module docstring."""
  rng = random.Random(seed)

  def sft(name, answer, steps, lr, init, copies=1):
    corpus = [{"question": ex["question"], "completion": "</think>" + answer(ex)}
              for ex in train for _ in range(copies)]
    sc = LMStageConfig(num_steps=steps, batch_size=16, seq_len=64, seed=seed, log_every=steps,
                       checkpoint_every=steps,
                       optim=OptimConfig(learning_rate=lr, total_steps=steps, schedule="constant"))
    return run_lm_stage(MODEL, sc, examples=corpus, tokenizer=TOKENIZER, workdir=os.path.join(workdir, name),
                        initial_variables=init, verbose=False)

  variables = sft("read", lambda ex: ex["answer"], READ_STEPS, 1e-2, init_variables(MODEL, jax.random.key(seed)))
  # Fresh draws per copy give every training question the same mix, so the model cannot memorise which
  # ones were answered correctly, and the training reward starts as low as the held-out accuracy.
  return sft("guess", lambda ex: ex["answer"] if rng.random() < READ_SHARE else GUESS, GUESS_STEPS, 3e-3,
             variables, copies=5)


def heldout_accuracy(variables, examples, seed):
  """(pass@1 sampled, pass@1 greedy) on the held-out problems."""
  # The same prompt batch, group size and lengths as the rollouts: the sampled pass reuses their program.
  ec = EvalConfig(num_examples=NUM_HELDOUT, batch_size=B, max_prompt_len=MAX_PROMPT, max_new_tokens=MAX_NEW,
                  num_samples=G, seed=seed)
  rep = evaluate(MODEL, variables, TOKENIZER, examples, ec)
  return rep["pass@1_sampled"], rep["pass@1_greedy"]


def warm(seed, workdir):
  """(warm-start variables, (train, held-out), held-out accuracy of the warm start)."""
  train, test = problems()
  variables = warm_start(train, seed, workdir)
  return variables, (train, test), heldout_accuracy(variables, test, seed)


def grpo(start, seed, workdir, *, learning_rate=RL_LR, accuracy_weight=1.0):
  """RL_STEPS GRPO steps from the warm start; returns the before / after numbers."""
  variables, (train, test), (sampled0, greedy0) = start
  sc = RLStageConfig(
      num_steps=RL_STEPS, batch_size=B, group_size=G, max_prompt_len=MAX_PROMPT, max_new_tokens=MAX_NEW,
      reward_weights=(("accuracy", accuracy_weight),), dynamic_sampling=False, checkpoint_every=RL_STEPS,
      seed=seed, grpo=GRPOConfig(beta=0.04, num_iterations=2, num_minibatches=2, temperature=1.0),
      optim=OptimConfig(learning_rate=learning_rate, total_steps=RL_STEPS, schedule="constant"))
  final = run_rl_stage(MODEL, sc, initial_variables=variables, tokenizer=TOKENIZER, train_examples=train,
                       eval_examples=None, workdir=workdir, verbose=False)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    accuracy = [json.loads(line)["accuracy"] for line in f if line.strip()]
  assert len(accuracy) == RL_STEPS
  sampled1, greedy1 = heldout_accuracy(final, test, seed)
  return {"reward_start": accuracy[0], "reward_end": float(np.mean(accuracy[-5:])),
          "heldout_start": sampled0, "heldout_end": sampled1, "greedy_start": greedy0, "greedy_end": greedy1}


@pytest.fixture(scope="module")
def start(tmp_path_factory):
  return warm(SEED, str(tmp_path_factory.mktemp("warm_start")))


def test_grpo_raises_training_reward_and_heldout_accuracy(start, tmp_path):
  m = grpo(start, SEED, str(tmp_path))
  assert m["reward_start"] <= MAX_START and m["heldout_start"] <= MAX_START, m
  assert m["reward_end"] >= m["reward_start"] + REWARD_MARGIN, m
  assert m["heldout_end"] >= m["heldout_start"] + HELDOUT_MARGIN, m
  assert m["greedy_end"] >= m["greedy_start"] + HELDOUT_MARGIN, m


@pytest.mark.parametrize("update", [dict(learning_rate=0.0), dict(accuracy_weight=-1.0)],
                         ids=["no_op", "sign_flipped"])
def test_a_broken_update_misses_the_margins(start, tmp_path, update):
  m = grpo(start, SEED, str(tmp_path), **update)
  assert m["reward_end"] < m["reward_start"] + REWARD_MARGIN, m
  assert m["heldout_end"] < m["heldout_start"] + HELDOUT_MARGIN, m
  assert m["greedy_end"] < m["greedy_start"] + HELDOUT_MARGIN, m
