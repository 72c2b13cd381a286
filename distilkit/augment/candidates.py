"""Where replacement words come from: a masked LM's predictions, or neighbours in an input-embedding space.

TinyBERT's split: a word that is a single piece of the masked LM's tokenizer gets the LM's top-M predictions with
that word masked (in its own sentence); any other word gets its M nearest neighbours by cosine similarity in an
input-embedding matrix (a multi-piece word: the mean of its pieces' embeddings). Without a masked LM every word
gets embedding neighbours. Candidates are always vocabulary entries that are whole words (no '##' continuation
piece, no special token, letters only), never the word itself (compared without case).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .arguments import AugmentArguments
from .words import join_words

_WORD_START_MARKERS = ("Ġ", "▁")  # byte-level BPE (GPT-2, RoBERTa) and SentencePiece mark a word's first piece


@functools.cache
def _word_start_marker(tokenizer) -> str | None:
    """The marker a tokenizer puts on a word's first piece, or None (WordPiece marks the other pieces, '##')."""
    vocab = tokenizer.get_vocab()
    for marker in _WORD_START_MARKERS:
        if sum(token.startswith(marker) for token in vocab) > len(vocab) // 10:
            return marker
    return None


def whole_word_vocabulary(tokenizer) -> tuple[list[int], list[str]]:
    """Ids and texts of the vocabulary entries that are whole words, in id order."""
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_ids)
    marker = _word_start_marker(tokenizer)
    ids, words = [], []
    for token, index in sorted(vocab.items(), key=lambda item: item[1]):
        if index in special or token.startswith("##"):
            continue
        if marker is not None:
            if not token.startswith(marker):
                continue
            token = token[len(marker):]
        if token.isalpha():
            ids.append(index)
            words.append(token)
    return ids, words


def word_pieces(tokenizer, word: str) -> list[int]:
    """The ids of a word's pieces as it appears inside a sentence; [] when a piece is unknown to the tokenizer."""
    prefix = " " if _word_start_marker(tokenizer) == "Ġ" else ""
    ids = tokenizer(prefix + word, add_special_tokens=False)["input_ids"]
    return [] if tokenizer.unk_token_id in ids else ids


def _top_words(scores: torch.Tensor, words: list[str], word: str, k: int) -> list[str]:
    """The k best-scoring `words` (scores aligned with them), the word itself left out."""
    scores = scores.clone()
    scores[[i for i, candidate in enumerate(words) if candidate.lower() == word.lower()]] = -float("inf")
    values, indices = scores.topk(min(k, len(words)))
    return [words[i] for value, i in zip(values.tolist(), indices.tolist()) if value != -float("inf")]


class EmbeddingNeighbours:
    """A word's nearest whole words by cosine similarity of input embeddings (a multi-piece word: their mean)."""

    def __init__(self, embeddings: torch.Tensor, tokenizer, num_candidates: int):
        self.embeddings = embeddings.detach().float().cpu()
        self.tokenizer = tokenizer
        self.num_candidates = num_candidates
        # Ids are in order, so those inside the matrix (a tokenizer may have more entries) are a prefix.
        ids, words = whole_word_vocabulary(tokenizer)
        ids = [i for i in ids if i < len(self.embeddings)]
        self.words = words[:len(ids)]
        self.word_vectors = F.normalize(self.embeddings[ids], dim=-1)
        self._cache: dict[str, list[str]] = {}

    def __call__(self, word: str) -> list[str]:
        if word not in self._cache:
            pieces = [i for i in word_pieces(self.tokenizer, word) if i < len(self.embeddings)]
            if not pieces:
                self._cache[word] = []
            else:
                scores = self.word_vectors @ F.normalize(self.embeddings[pieces].mean(0), dim=0)
                self._cache[word] = _top_words(scores, self.words, word, self.num_candidates)
        return self._cache[word]


class MaskedLMCandidates:
    """A masked LM's top-M whole-word predictions for a word masked in its sentence; batched over many words."""

    def __init__(self, model, tokenizer, num_candidates: int, batch_size: int = 64):
        if tokenizer.mask_token is None:
            raise ValueError(f"The masked LM's tokenizer ({type(tokenizer).__name__}) has no mask token.")
        self.model = model
        self.tokenizer = tokenizer
        self.num_candidates = num_candidates
        self.batch_size = batch_size
        ids, self.words = whole_word_vocabulary(tokenizer)
        self.word_ids = torch.tensor(ids)
        self.max_length = min(tokenizer.model_max_length, 512)

    def is_single_piece(self, word: str) -> bool:
        return len(word_pieces(self.tokenizer, word)) == 1

    def _mask_position(self, input_ids: torch.Tensor, nth: int) -> int | None:
        """Where the nth mask token is (the text may hold the mask token itself); None when truncated away."""
        found = (input_ids == self.tokenizer.mask_token_id).nonzero().flatten().tolist()
        return found[nth] if len(found) > nth else None

    @torch.inference_mode()
    def __call__(self, requests: list[tuple[list[str], int]]) -> list[list[str]]:
        """For each (words of a text, position): the candidates for that word ([] when truncation cut it off)."""
        mask = self.tokenizer.mask_token
        texts = [join_words(words[:i] + [mask] + words[i + 1:]) for words, i in requests]
        was_training = self.model.training
        self.model.eval()
        results = []
        try:
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.model.device)
                requested = requests[start:start + self.batch_size]
                positions = [self._mask_position(batch["input_ids"][row], words[:i].count(mask))
                             for row, (words, i) in enumerate(requested)]
                kept = [row for row, position in enumerate(positions) if position is not None]
                logits = self.model(**batch).logits
                # Only the masked positions' whole-word scores leave the device (all the logits are large).
                scores = logits[kept, [positions[row] for row in kept]][:, self.word_ids.to(logits.device)]
                by_row = dict(zip(kept, scores.float().cpu()))
                for row, (words, i) in enumerate(requested):
                    results.append(_top_words(by_row[row], self.words, words[i], self.num_candidates)
                                   if row in by_row else [])
        finally:
            self.model.train(was_training)
        return results


class Replacements:
    """Candidates for each word of many texts: the masked LM's for its single-piece words, else neighbours.

    Only words of letters are replaced; numbers and punctuation keep no candidates.
    """

    def __init__(self, neighbours: EmbeddingNeighbours, mlm: MaskedLMCandidates | None = None):
        self.neighbours = neighbours
        self.mlm = mlm

    def for_texts(self, texts: list[list[str]]) -> list[list[list[str]]]:
        """texts: each a list of words -> per text, per word, the candidates."""
        result = [[[] for _ in words] for words in texts]
        requests, slots = [], []
        for t, words in enumerate(texts):
            for i, word in enumerate(words):
                if not word.isalpha():
                    continue
                if self.mlm is not None and self.mlm.is_single_piece(word):
                    requests.append((words, i))
                    slots.append((t, i))
                else:
                    result[t][i] = self.neighbours(word)
        if requests:
            for (t, i), candidates in zip(slots, self.mlm(requests)):
                result[t][i] = candidates
        return result


def _has_masked_lm_head(model) -> bool:
    return type(model).__name__.endswith("ForMaskedLM")


def check_replacement_source(args: AugmentArguments, tokenizer, teacher) -> None:
    """Fail before any work when 'replace' has nothing to draw replacements from."""
    if "replace" not in args.methods:
        return
    if args.augment_mlm is None and teacher is None:
        raise ValueError(
            "methods includes 'replace' but there is nothing to pick replacement words from: pass the teacher "
            "(model.teacher; its input embeddings give nearest-neighbour words), or set augment_mlm to a fill-mask "
            "model folder or Hub id, or drop 'replace' from methods."
        )
    if args.augment_mlm == "teacher":
        if teacher is None:
            raise ValueError("augment_mlm='teacher' but no teacher was given: pass the teacher (model.teacher), "
                             "or set augment_mlm to a fill-mask model folder or Hub id.")
        if not _has_masked_lm_head(teacher):
            raise ValueError(
                f"augment_mlm='teacher' but the teacher ({type(teacher).__name__}) has no masked-LM head: name a "
                "fill-mask model folder or Hub id in augment_mlm, or leave augment_mlm unset to use the nearest "
                "neighbours in the teacher's input embeddings."
            )
    if teacher is not None and tokenizer is None:
        raise ValueError("methods includes 'replace' with a teacher but no tokenizer: pass the teacher's tokenizer.")


def _load_masked_lm(source: str):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    try:
        return AutoModelForMaskedLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ValueError(f"augment_mlm={source!r}: could not load a fill-mask model and its tokenizer: {err}") from err


def _input_embeddings(model) -> torch.Tensor:
    return model.get_input_embeddings().weight


def replacement_source(args: AugmentArguments, tokenizer, teacher) -> Replacements:
    """The replacements `args` ask for (checked first with `check_replacement_source`); loads a named masked LM."""
    check_replacement_source(args, tokenizer, teacher)
    mlm = None
    if args.augment_mlm == "teacher":
        mlm = MaskedLMCandidates(teacher, tokenizer, args.num_candidates)
    elif args.augment_mlm is not None:
        model, mlm_tokenizer = _load_masked_lm(args.augment_mlm)
        mlm = MaskedLMCandidates(model, mlm_tokenizer, args.num_candidates)
    if teacher is not None:
        neighbours = EmbeddingNeighbours(_input_embeddings(teacher), tokenizer, args.num_candidates)
    else:  # only a named masked LM: its own embeddings, read with its own tokenizer
        neighbours = EmbeddingNeighbours(_input_embeddings(mlm.model), mlm.tokenizer, args.num_candidates)
    return Replacements(neighbours, mlm)
