"""One augmented copy of one text: word replacement (TinyBERT), masking and n-gram sampling (Tang et al. 2019).

Per word, in order: with mask_prob it becomes the mask token ('mask'); otherwise, with replace_prob, one of its
candidates drawn uniformly ('replace'; a word without candidates stays). Then, with ngram_prob, the copy is cut
to a random n-gram of itself, n uniform in 1..5 ('ngram'). Tang et al.'s part-of-speech-guided swap is left out:
it needs a tagger. A copy in which nothing changed is the original text exactly.
"""

from __future__ import annotations

import random

from .arguments import AugmentArguments
from .words import is_word, join_words

MAX_NGRAM = 5


def sample_ngram(words: list[str], rng: random.Random) -> list[str]:
    """A random n-gram of `words`, n uniform in 1..5 (at most the whole text)."""
    n = min(rng.randint(1, MAX_NGRAM), len(words))
    start = rng.randint(0, len(words) - n)
    return words[start:start + n]


def augment_text(text: str, words: list[str], candidates: list[list[str]], args: AugmentArguments,
                 rng: random.Random, mask_token: str | None) -> str:
    """One copy of `text` (split into `words`; `candidates[i]`: the replacements of word i, [] for none)."""
    mask, replace = "mask" in args.methods, "replace" in args.methods
    copy = []
    for word, options in zip(words, candidates):
        if mask and is_word(word) and rng.random() < args.mask_prob:
            copy.append(mask_token)
        elif replace and options and rng.random() < args.replace_prob:
            copy.append(rng.choice(options))
        else:
            copy.append(word)
    if "ngram" in args.methods and rng.random() < args.ngram_prob:
        copy = sample_ngram(copy, rng)
    return text if copy == words else join_words(copy)
