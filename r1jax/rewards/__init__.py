"""Rule rewards for R1-style RL: format, accuracy (per-task verifiers), language consistency,
length. Pure Python over strings, no JAX; model output is parsed with bounded time and size and is
never executed.

    from r1jax.rewards import format_reward, accuracy_reward, language_consistency_reward
    format_reward("<think>2+2 is 4</think> <answer>4</answer>")             # 1.0
    accuracy_reward("<think>...</think><answer>4</answer>", example)        # 1.0 or 0.0
    language_consistency_reward(completion, target="latin")                # [0, 1]
    overlong_penalty(num_tokens, max_len=4096, buffer_len=512)             # [-1, 0]; "overlong" in configs
    total, parts = combine(completion, example, weights={"accuracy": 1.0, "format": 0.2})

LaTeX equivalence (MATH) uses math-verify in a lazily started pool of worker processes with a hard
per-call deadline; `configure_math_verify(timeout_s=..., num_workers=...)` changes its settings.
"""
from r1jax.rewards._math_verify_pool import configure as configure_math_verify
from r1jax.rewards._math_verify_pool import num_timeouts as math_verify_timeouts
from r1jax.rewards._math_verify_pool import num_workers as math_verify_workers
from r1jax.rewards.accuracy import VERIFIERS, accuracy_reward, get_verifier
from r1jax.rewards.combine import REWARDS, combine
from r1jax.rewards.countdown import evaluate_equation, verify_countdown
from r1jax.rewards.format import answer_region, extract_answer, extract_think, format_reward
from r1jax.rewards.language import language_consistency_reward, script_word_counts
from r1jax.rewards.length import LENGTH_REWARDS, overlong_options, overlong_penalty
from r1jax.rewards.math import (last_boxed, last_number, numbers_match, parse_number,
                                parse_quotient_remainder, verify_arithmetic, verify_latex,
                                verify_number)

__all__ = [
    "LENGTH_REWARDS", "REWARDS", "VERIFIERS", "accuracy_reward", "answer_region", "combine", "configure_math_verify",
    "math_verify_timeouts", "math_verify_workers",
    "evaluate_equation", "extract_answer", "extract_think", "format_reward", "get_verifier",
    "language_consistency_reward", "last_boxed", "last_number", "numbers_match",
    "overlong_options", "overlong_penalty", "parse_number", "parse_quotient_remainder", "script_word_counts",
    "verify_arithmetic", "verify_countdown", "verify_latex", "verify_number",
]
