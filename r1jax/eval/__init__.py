"""Evaluation: pass@k, maj@k, mean pass@1 estimators, task evaluation and report tables."""
from r1jax.eval.metrics import maj_at_k
from r1jax.eval.metrics import majority_answer
from r1jax.eval.metrics import mean_pass_at_1
from r1jax.eval.metrics import pass_at_k
from r1jax.eval.metrics import summarize_problems
from r1jax.eval.evaluate import EvalConfig, evaluate
