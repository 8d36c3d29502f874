"""Data: tasks, tokenizers, prompt templates and Grain input pipelines (pure Python, no JAX).

    from r1jax import data
    tok = data.SentencePieceTokenizer.train(texts, vocab_size=320)
    it = data.prompt_batches(examples, tok, "compact", batch_size=8, max_prompt_len=64, seed=0)
    batch = next(it)   # prompt_tokens int32[B, P] (left-padded), prompt_mask, examples, ...

The task registry lives in the `r1jax.data.tasks` subpackage (`from r1jax.data import tasks`); it is
not imported here so the tokenizer/pipeline API stays importable on its own.
"""
from r1jax.data.hf_tokenizer import HFTokenizer
from r1jax.data.jsonl import JsonlError, JsonlSource
from r1jax.data.pipeline import (
    ShardedBatches,
    as_source,
    concat_batches,
    packed_lm_batches,
    packed_lm_dataset,
    prompt_batches,
    prompt_dataset,
)
from r1jax.data.templates import (
    TEMPLATES,
    ChatTemplate,
    ModelChatTemplate,
    PromptTemplate,
    check_template,
    get_template,
    render_model_chat,
    template_names,
    render_chat,
    response_prefix,
)
from r1jax.data.tokenizer import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    TAGS,
    THINK_CLOSE,
    THINK_OPEN,
    SentencePieceTokenizer,
    Tokenizer,
)

__all__ = [
    "ANSWER_CLOSE", "ANSWER_OPEN", "TAGS", "THINK_CLOSE", "THINK_OPEN",
    "Tokenizer", "SentencePieceTokenizer", "HFTokenizer",
    "TEMPLATES", "PromptTemplate", "ChatTemplate", "get_template", "render_chat", "response_prefix",
    "ModelChatTemplate", "check_template", "render_model_chat", "template_names",
    "JsonlSource", "JsonlError",
    "as_source", "prompt_batches", "prompt_dataset", "packed_lm_batches", "packed_lm_dataset",
    "ShardedBatches", "concat_batches",
]
