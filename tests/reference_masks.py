"""Plain reference implementations of every mask, written from sparse-patterns.md with per-row loops.

They share no code with the library. Each returns the final keep-mask ``[H|1, n, n]`` (numpy bool) for queries and
keys at positions 0..n-1: the pattern, within the allowed set, plus the diagonal. Score-dependent references take
logits ``[H, n, n]`` with ``-inf`` on pairs that are not allowed.
"""

from __future__ import annotations

import math

import numpy as np


def finalise(keep: np.ndarray, causal: bool) -> np.ndarray:
    keep = keep.copy()
    n = keep.shape[-1]
    for i in range(n):
        for j in range(n):
            if causal and j > i:
                keep[..., i, j] = False
        keep[..., i, i] = True
    return keep


def static(rule, n: int, causal: bool = True) -> np.ndarray:
    keep = np.zeros((1, n, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            keep[0, i, j] = bool(rule(i, j))
    return finalise(keep, causal)


def sliding_window(n, window, causal=True):
    return static(lambda i, j: (i - j < window) if causal else abs(i - j) <= window // 2, n, causal)


def dilated_window(n, window, dilation, causal=True):
    if causal:
        return static(lambda i, j: (i - j) % dilation == 0 and i - j < window * dilation, n, causal)
    return static(lambda i, j: abs(i - j) % dilation == 0 and abs(i - j) <= (window // 2) * dilation, n, causal)


def chunked(n, chunk, causal=True):
    return static(lambda i, j: i // chunk == j // chunk, n, causal)


def sink_window(n, sinks, window, causal=True):
    local = (lambda i, j: i - j < window) if causal else (lambda i, j: abs(i - j) <= window // 2)
    return static(lambda i, j: j < sinks or local(i, j), n, causal)


def global_local(n, window, n_global, causal=True):
    local = (lambda i, j: i - j < window) if causal else (lambda i, j: abs(i - j) <= window // 2)
    return static(lambda i, j: local(i, j) or j < n_global or i < n_global, n, causal)


def strided(n, stride, causal=True):
    return static(lambda i, j: abs(i - j) <= stride or abs(i - j) % stride == 0, n, causal)


def fixed(n, stride, summary, causal=True):
    return static(lambda i, j: i // stride == j // stride or j % stride >= stride - summary, n, causal)


def _softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    finite = np.isfinite(row)
    out = np.zeros_like(row)
    if finite.any():
        e = np.exp(row[finite] - row[finite].max())
        out[finite] = e / e.sum()
    return out


def _best(candidates: list[int], score, k: int) -> list[int]:
    """The k candidates with the highest score[c] (score: an array or dict indexed by candidate); ties keep order."""
    return sorted(candidates, key=lambda c: -score[c])[:k]


def topk(logits, k):
    h, n, _ = logits.shape
    keep = np.zeros((h, n, n), dtype=bool)
    for head in range(h):
        for i in range(n):
            others = [j for j in range(n) if j != i and np.isfinite(logits[head, i, j])]
            keep[head, i, _best(others, logits[head, i], k - 1) + [i]] = True
    return finalise(keep, True)


def dsa(logits, k):
    h, n, _ = logits.shape
    keep = np.zeros((1, n, n), dtype=bool)
    for i in range(n):
        index = sum(_softmax(logits[head, i]) for head in range(h))
        others = [j for j in range(n) if j != i and np.isfinite(logits[0, i, j])]
        keep[0, i, _best(others, index, k - 1) + [i]] = True
    return finalise(keep, True)


def nsa(logits, n_blocks, block, window, groups):
    h, n, _ = logits.shape
    keep = np.zeros((h, n, n), dtype=bool)
    for i in range(n):
        own = i // block
        complete = [c for c in range(own + 1) if (c + 1) * block <= i + 1]
        for g in range(h // groups):
            importance = np.zeros(own + 1)
            for head in range(g * groups, (g + 1) * groups):
                means = [np.mean(logits[head, i, c * block : (c + 1) * block]) for c in complete]
                p = _softmax(np.array(means)) if complete else []
                for c, pc in zip(complete, p, strict=True):
                    importance[c] += pc
            forced = sorted({0, own, own - 1} - {-1})
            rest = [c for c in range(own + 1) if c not in forced]
            chosen = forced + _best(rest, importance, max(0, n_blocks - len(forced)))
            for head in range(g * groups, (g + 1) * groups):
                for j in range(i + 1):
                    keep[head, i, j] = (j // block in chosen) or (i - j < window)
    return finalise(keep, True)


def moba(logits, k, block):
    h, n, _ = logits.shape
    keep = np.zeros((h, n, n), dtype=bool)
    for head in range(h):
        for i in range(n):
            own = i // block
            past = list(range(own))
            gate = {b: np.mean(logits[head, i, b * block : (b + 1) * block]) for b in past}
            chosen = [own] + _best(past, gate, k - 1)
            for j in range(i + 1):
                keep[head, i, j] = j // block in chosen
    return finalise(keep, True)


def block_topk(logits, top_k, block):
    h, n, _ = logits.shape
    keep = np.zeros((h, n, n), dtype=bool)
    n_b = math.ceil(n / block)
    for head in range(h):
        for qb in range(n_b):
            rows = range(qb * block, min(n, (qb + 1) * block))
            pooled = {}
            for kb in range(qb + 1):
                vals = [logits[head, i, j] for i in rows for j in range(kb * block, min(n, (kb + 1) * block)) if j <= i]
                pooled[kb] = np.mean(vals)
            chosen = _best(list(range(qb + 1)), pooled, top_k)
            for i in rows:
                for j in range(i + 1):
                    keep[head, i, j] = j // block in chosen
    return finalise(keep, True)


def quest(logits, token_budget, page):
    h, n, _ = logits.shape
    keep = np.zeros((h, n, n), dtype=bool)
    for head in range(h):
        for i in range(n):
            pages = list(range(i // page + 1))
            score = {p: max(logits[head, i, j] for j in range(p * page, min(i + 1, (p + 1) * page))) for p in pages}
            chosen = _best(pages, score, max(3, token_budget // page))
            for j in range(i + 1):
                keep[head, i, j] = j // page in chosen
    return finalise(keep, True)


def h2o(logits, kv_budget):
    h, n, _ = logits.shape
    heavy, recent = kv_budget // 2, kv_budget - kv_budget // 2
    keep = np.zeros((h, n, n), dtype=bool)
    for head in range(h):
        acc = np.zeros(n)
        for t in range(n):
            p = _softmax(logits[head, t])
            if t < heavy:
                keep[head, t, : t + 1] = True
                acc += p
                continue
            if t == heavy:
                acc[heavy:] = 0
            chosen = _best(list(range(t)), acc, heavy - 1) if heavy > 1 else []
            row = np.zeros(n, dtype=bool)
            row[chosen + [t]] = True
            keep[head, t] = row
            acc = (acc + p) * row
        for t in range(n):
            for j in range(t + 1):
                if t - j < recent:
                    keep[head, t, j] = True
    return finalise(keep, True)


def vertical_slash(logits, size, vertical_fraction, last_q, sink_columns, local_diagonals):
    h, n, _ = logits.shape
    keep = np.zeros((h, n, n), dtype=bool)
    n_v = min(n, round(size * vertical_fraction))
    n_s = min(n, size - n_v)
    for head in range(h):
        vertical = np.zeros(n)
        slash = np.zeros(n)
        for i in range(max(0, n - last_q), n):
            p = _softmax(logits[head, i])
            for j in range(i + 1):
                vertical[j] += p[j]
                slash[i - j] += p[j]
        # forced first (first columns, nearest diagonals), then by attention mass
        cols = (list(range(min(sink_columns, n))) + _best(list(range(sink_columns, n)), vertical, n))[:n_v]
        diags = (list(range(min(local_diagonals, n))) + _best(list(range(local_diagonals, n)), slash, n))[:n_s]
        for i in range(n):
            for j in range(i + 1):
                keep[head, i, j] = j in cols or (i - j) in diags
    return finalise(keep, True)


def for_mask(mask, n: int, logits: np.ndarray | None = None, causal: bool = True, groups: int = 1) -> np.ndarray:
    """Dispatch a library mask instance to its reference (for everything but BigBird's random blocks)."""
    p = mask.params()
    name = mask.id
    if name == "dense":
        return static(lambda i, j: True, n, causal)
    if name in ("sliding_window", "dilated_window", "chunked", "sink_window", "global_local", "strided", "fixed"):
        return globals()[name](n, **p, causal=causal)
    if name == "nsa":
        return nsa(logits, p["n"], p["block"], p["window"], groups)
    if name in ("topk", "dsa", "moba", "block_topk", "quest", "h2o", "vertical_slash"):
        return globals()[name](logits, **p)
    raise KeyError(name)
