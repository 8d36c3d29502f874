"""Tiny, complete Hugging Face model directories for tests: random weights that transformers creates, a
byte-level BPE tokenizer.json trained on GSM8K text, a chat template, and the generation config.

    path = tiny_hf_model(tmp_path / "qwen2", "qwen2")           # needs torch + transformers (the [hf] extra)
    c.init = f"hf:{path}"                                        # any stage takes it

What the directory holds mirrors a Qwen2.5/Qwen3/DeepSeek-R1-Distill release: config.json and
model.safetensors (transformers' save_pretrained), tokenizer.json (special tokens <|endoftext|>,
<|im_start|>, <|im_end|>; <think> </think> <answer> </answer> as added tokens), tokenizer_config.json
(eos <|im_end|>, pad <|endoftext|>, no BOS, and a ChatML chat template of our own that inserts a default
system message), and generation_config.json (stops on <|im_end|> and <|endoftext|>). `r1_distill_style=True`
writes instead a template in the style of DeepSeek-R1-Distill: a BOS token it prints itself, <|User|> /
<|Assistant|> markers, and a generation prompt that opens <think>.
"""
from __future__ import annotations

import json
import pathlib

FAMILIES = ("qwen2", "qwen3", "qwen3_moe", "deepseek_v3")
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ADDED = ("<think>", "</think>", "<answer>", "</answer>")
R1_MARKERS = ("<|begin_of_sentence|>", "<|User|>", "<|Assistant|>")

CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou solve problems.<|im_end|>\\n' }}{%- endif %}\n"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content | trim + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n")
R1_DISTILL_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<|User|>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}{{ '<|Assistant|>' + message['content'] + eos_token }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|Assistant|><think>\\n' }}{%- endif %}")


def _corpus(n: int = 400) -> list[str]:
  from r1jax.data import tasks
  out = []
  for ex in tasks.get("gsm8k").examples("train", num=n):
    out += [ex["question"], ex["solution"], f"<think> {ex['solution']} </think> <answer> {ex['answer']} </answer>",
            f"The final answer is \\boxed{{{ex['answer']}}}."]
  return out


def tokenizer_json(vocab_size: int = 384, *, r1_distill_style: bool = False) -> str:
  """A byte-level BPE tokenizer.json (the Qwen kind) trained on GSM8K text."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  special = list(SPECIAL) + (list(R1_MARKERS) if r1_distill_style else [])
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_corpus(), trainer)
  tok.add_tokens(list(ADDED))
  return tok.to_str()


def _hf_config(family: str, vocab_size: int, eos_id: int, **overrides):
  import transformers
  common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=512, initializer_range=0.2, eos_token_id=eos_id,
                bos_token_id=None, rms_norm_eps=1e-6)
  common.update(overrides)
  if family == "qwen2":
    return transformers.Qwen2Config(**common, num_key_value_heads=2, tie_word_embeddings=True)
  if family == "qwen3":
    return transformers.Qwen3Config(**common, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False)
  if family == "qwen3_moe":
    return transformers.Qwen3MoeConfig(**common, num_key_value_heads=2, head_dim=16, num_experts=4,
                                       num_experts_per_tok=2, moe_intermediate_size=16, norm_topk_prob=True)
  if family == "deepseek_v3":
    return transformers.DeepseekV3Config(
        **common, num_key_value_heads=4, moe_intermediate_size=16, n_shared_experts=1, n_routed_experts=4,
        n_group=2, topk_group=1, num_experts_per_tok=2, first_k_dense_replace=1, q_lora_rank=16,
        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, routed_scaling_factor=1.5)
  raise ValueError(f"family {family!r}: one of {FAMILIES}")


def write_tokenizer(path, *, r1_distill_style: bool = False, vocab_size: int = 384) -> dict[str, int]:
  """Writes tokenizer.json, tokenizer_config.json (with the chat template) and generation_config.json into
  `path`; returns the special tokens' ids plus "vocab" (the tokenizer's id range)."""
  from tokenizers import Tokenizer
  out = pathlib.Path(path)
  out.mkdir(parents=True, exist_ok=True)
  text = tokenizer_json(vocab_size, r1_distill_style=r1_distill_style)
  tok = Tokenizer.from_str(text)
  ids = {t: tok.token_to_id(t) for t in (*SPECIAL, *(R1_MARKERS if r1_distill_style else ()))}
  (out / "tokenizer.json").write_text(text, encoding="utf-8")
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512, "pad_token": "<|endoftext|>",
            "bos_token": None, "eos_token": "<|im_end|>", "chat_template": CHATML_TEMPLATE}
  if r1_distill_style:
    config.update(bos_token="<|begin_of_sentence|>", eos_token="<|endoftext|>", chat_template=R1_DISTILL_TEMPLATE)
  (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
  stops = [ids["<|endoftext|>"]] if r1_distill_style else [ids["<|im_end|>"], ids["<|endoftext|>"]]
  (out / "generation_config.json").write_text(json.dumps({"eos_token_id": stops}, indent=1), encoding="utf-8")
  return {**ids, "eos": stops[0], "vocab": tok.get_vocab_size(with_added_tokens=True)}


def tiny_hf_model(path, family: str = "qwen2", *, seed: int = 0, r1_distill_style: bool = False,
                  vocab_size: int = 384) -> pathlib.Path:
  """Writes a complete tiny Hugging Face model directory of `family` at `path`; returns the path."""
  import torch
  import transformers
  out = pathlib.Path(path)
  ids = write_tokenizer(out, r1_distill_style=r1_distill_style, vocab_size=vocab_size)
  model_vocab = -(-ids["vocab"] // 32) * 32              # padded, as released checkpoints are
  cfg = _hf_config(family, model_vocab, ids["eos"])
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
  generation_config = (out / "generation_config.json").read_text(encoding="utf-8")
  model.save_pretrained(out)                             # writes its own generation_config.json: keep ours
  (out / "generation_config.json").write_text(generation_config, encoding="utf-8")
  return out
