"""Text in, tokens out: the token ids of a text (with clear errors for unusable text), readable token strings,
the model's end-of-sequence ids and its number of positions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .introspect import input_device, text_config

Tensor = torch.Tensor


def text_to_ids(
    tok: PreTrainedTokenizerBase, text: Any, model: PreTrainedModel, max_tokens: int | None
) -> tuple[Tensor, int]:
    """Token ids ``[1, T]`` on the model's device (cut to ``max_tokens``) and the text's full length in tokens,
    with clear errors for unusable text."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty (or only whitespace): pass at least one word, e.g. text='The cat sat.'")
    if "\x00" in text:
        raise ValueError("text contains a NUL character (\\x00); remove it (text.replace('\\x00', ''))")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone half of a surrogate pair (a broken emoji, from JSON or a browser)
        raise ValueError(
            f"text contains an unpaired surrogate {text[err.start]!r} at character {err.start}, which is not valid "
            f"Unicode; remove it (e.g. text.encode('utf-8', 'ignore').decode())"
        ) from None
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    ids = tok(text, return_tensors="pt").input_ids
    full_length = ids.shape[1]
    limit = max_positions(model)
    if max_tokens is not None:
        ids = ids[:, :max_tokens]
    if limit is not None and ids.shape[1] > limit:
        raise ValueError(
            f"text is {ids.shape[1]} tokens but {type(model).__name__} has {limit} positions; shorten it or pass "
            f"max_tokens={limit} to truncate"
        )
    if ids.shape[1] == 0:
        raise ValueError("text produced no tokens; pass some words")
    return ids.to(input_device(model)), full_length


def max_positions(model: PreTrainedModel) -> int | None:
    config = text_config(model)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def eos_ids(tok: PreTrainedTokenizerBase, model: PreTrainedModel) -> set[int]:
    ids = set()
    for value in (tok.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def readable_tokens(decode: Callable[[list[int]], str], ids: list[int]) -> list[str]:
    """Each token as the text it adds. Byte-level tokenizers split a character of several bytes (an emoji, most
    CJK) over tokens that decode to U+FFFD one by one; such a run is decoded together, the characters go to the
    token that completes them, and the tokens before it get "" (shown as ∅). So ``"".join(tokens)`` is the text."""
    out = [decode([i]) for i in ids]
    n, k = len(ids), 0
    while k < n:
        if "\ufffd" not in out[k]:
            k += 1
            continue
        end = k + 1
        while end < n and decode(ids[k:end]).endswith("\ufffd") and end - k < 16:  # until the bytes complete
            end += 1
        done = ""
        for m in range(k, end):
            text = decode(ids[k : m + 1])
            stable = text.rstrip("\ufffd") if m < end - 1 else text
            if not stable.startswith(done):  # the tokenizer does not decode prefix by prefix: keep it as it was
                break
            out[m], done = stable[len(done) :], stable
        k = end
    return out


def decoder(tok: PreTrainedTokenizerBase) -> Callable[[list[int]], str]:
    def decode(ids: list[int]) -> str:
        text = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert isinstance(text, str)  # one id list decodes to one string (a batch would give a list)
        return text

    return decode
