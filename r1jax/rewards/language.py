"""Language-consistency reward (DeepSeek-R1, Sec. 2.3.3): the share of the chain of thought that
is written in the target language.

R1 scores "the proportion of target language words in the CoT". Without a language-ID model, the
script of each word stands in for its language (Latin for English, Han for Chinese, ...), which is
exactly the failure R1 fights: chains of thought that drift between English and Chinese.

Words, from `unicodedata` alone:
  * a word is a maximal run of letters of one script; combining marks (accents, Devanagari vowel
    signs) and invisible format characters (zero-width space, zero-width joiner / non-joiner, word
    joiner, soft hyphen, byte-order mark) continue the word they are in; single dots, hyphens and
    apostrophes between letters of one script do too ("д.е.с.я.т.к.и" is one Cyrillic word, not
    seven one-letter ones, and "e.g." one Latin word); digits, other punctuation, symbols and
    spaces end words;
  * Han, Hiragana and Katakana are written without spaces, so each of their characters is a word
    (a Chinese word is ~1.5 characters; this is the usual cheap proxy);
  * in all other scripts, one-letter words don't count: they are variables and symbols in math
    (x, y, π, θ), not language; English "a" and "I" are lost too, which barely moves a share;
  * letter-like math symbols (𝑥, ℝ, ℓ) and modifier letters belong to no script.

The share is words in the target script(s) / all words; a chain of thought with no words scores
0.0 (nothing in the target language, and an empty chain of thought should not earn this reward).
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

from r1jax.rewards.format import extract_think

# Scripts written without spaces between words: each character counts as one word.
_PER_CHARACTER_SCRIPTS = frozenset({"han", "hiragana", "katakana"})
# Unicode name prefixes of letters that are math notation or modifiers, not words of a language.
_NEUTRAL_PREFIXES = frozenset({"MATHEMATICAL", "MODIFIER", "DOUBLE-STRUCK", "SCRIPT",
                               "BLACK-LETTER", "PLANCK", "KELVIN", "ANGSTROM", "TURNED",
                               "INFORMATION", "NUMERO"})
_MARK = "mark"
# Punctuation that joins letters of one script into one word when it stands alone between them.
_CONNECTORS = frozenset(".-'\u00b7\u2010\u2011\u2019\u2027")
_CONNECTOR_CODE = "~"

SCRIPTS = frozenset({
    "latin", "greek", "cyrillic", "armenian", "hebrew", "arabic", "syriac", "thaana", "nko",
    "devanagari", "bengali", "gurmukhi", "gujarati", "oriya", "tamil", "telugu", "kannada",
    "malayalam", "sinhala", "thai", "lao", "tibetan", "myanmar", "georgian", "hangul", "ethiopic",
    "cherokee", "khmer", "mongolian", "hiragana", "katakana", "bopomofo", "han", "yi", "tifinagh",
    "javanese", "balinese", "other",
})
# Target names: a script, or a language / group name for the scripts it is written in.
TARGET_ALIASES = {
    "english": ("latin",), "en": ("latin",),
    "chinese": ("han",), "zh": ("han",),
    "japanese": ("han", "hiragana", "katakana"), "ja": ("han", "hiragana", "katakana"),
    "korean": ("hangul", "han"), "ko": ("hangul", "han"),
    "cjk": ("han", "hiragana", "katakana", "hangul", "bopomofo"),
    "russian": ("cyrillic",), "ru": ("cyrillic",),
    "hindi": ("devanagari",), "hi": ("devanagari",),
}


def language_consistency_reward(completion: str, *, target: str | Iterable[str] = "latin"
                                ) -> float:
  """Share of the words of the chain of thought that are in the target script(s).

  The chain of thought is `format.extract_think(completion)`: the think block, or everything before
  `</think>` when the prompt opened it, or the whole completion when there are no think tags.

  Args:
    completion: the generated text.
    target: a script name from `SCRIPTS`, an alias from `TARGET_ALIASES` ("english", "chinese",
      "japanese", "cjk", ...), or an iterable of script names.

  Returns:
    A float in [0, 1]; 0.0 when the chain of thought has no words.

  Raises:
    TypeError: `completion` is not a str.
    ValueError: unknown target (a config bug, never model output).
  """
  if not isinstance(completion, str):
    raise TypeError(f"completion must be str, got {type(completion).__name__}")
  scripts = target_scripts(target)
  counts = script_word_counts(extract_think(completion))
  total = sum(counts.values())
  if total == 0:
    return 0.0
  return sum(counts[s] for s in scripts) / total


def target_scripts(target: str | Iterable[str]) -> frozenset[str]:
  """The set of scripts a `target` stands for; raises ValueError for unknown names."""
  names = [target] if isinstance(target, str) else list(target)
  scripts = set()
  for name in names:
    key = str(name).lower()
    if key in TARGET_ALIASES:
      scripts.update(TARGET_ALIASES[key])
    elif key in SCRIPTS:
      scripts.add(key)
    else:
      raise ValueError(f"unknown language target {name!r}; use a script {sorted(SCRIPTS)} or an "
                       f"alias {sorted(TARGET_ALIASES)}")
  if not scripts:
    raise ValueError("language target is empty")
  return frozenset(scripts)


def script_word_counts(text: str) -> Counter:
  """Number of words per script in `text` (see the module docstring for what a word is).

  >>> script_word_counts("Let x be 数学 and Пусть")
  Counter({'latin': 3, 'han': 2, 'cyrillic': 1})
  """
  # One C-speed pass maps every character to a one-letter script code (" " for non-letters;
  # combining marks are deleted, which joins them to the word they follow), then words are runs
  # of one code. A Python loop over characters took 0.5-1.3 s per MB; this takes ~0.05 s.
  codes = text.translate(_CODE_TABLE)
  counts = Counter()
  for code in set(codes):
    if code in (" ", _CONNECTOR_CODE):
      continue
    script = _SCRIPT_OF_CODE[code]
    if script in _PER_CHARACTER_SCRIPTS:
      counts[script] = codes.count(code)
    else:
      num_words = sum(1 for _ in _run_regex(code).finditer(codes))
      if num_words:
        counts[script] = num_words
  return counts


def _script_of(ch: str) -> str | None:
  category = unicodedata.category(ch)
  if category[0] == "M" or category == "Cf":     # marks; zero-width and other invisible format characters
    return _MARK
  if category[0] != "L":
    return None
  words = unicodedata.name(ch, "").split()
  if not words:
    return "other"
  first = words[0]
  if first in ("HALFWIDTH", "FULLWIDTH") and len(words) > 1:
    first = words[1]
  if first in _NEUTRAL_PREFIXES:
    return None
  if first in ("CJK", "IDEOGRAPHIC"):
    return "han"
  if first == "KATAKANA-HIRAGANA":
    return "katakana"
  script = first.lower()
  return script if script in SCRIPTS else "other"


_CODE_OF_SCRIPT = {script: chr(ord("A") + i) for i, script in enumerate(sorted(SCRIPTS))}
_SCRIPT_OF_CODE = {code: script for script, code in _CODE_OF_SCRIPT.items()}
_MAX_CACHED_CODE_POINTS = 1 << 16  # Adversarial text may hold every code point; keep memory flat.


class _CodeTable(dict):
  """`str.translate` table: code point -> script code, computed on first sight and cached."""

  def __missing__(self, code_point: int) -> str | None:
    ch = chr(code_point)
    script = _script_of(ch)
    code = None if script == _MARK else _CONNECTOR_CODE if ch in _CONNECTORS else _CODE_OF_SCRIPT.get(script, " ")
    if len(self) < _MAX_CACHED_CODE_POINTS:
      self[code_point] = code
    return code


_CODE_TABLE = _CodeTable()


@functools.lru_cache(maxsize=None)
def _run_regex(code: str) -> re.Pattern:
  # Runs of two or more letters, single connectors allowed between them: one-letter words are symbols
  # (see the module docstring). Linear time: every step of the match consumes a letter.
  c = re.escape(code)
  return re.compile(f"{c}(?:{_CONNECTOR_CODE}?{c})+")
