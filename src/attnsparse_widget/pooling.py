"""Block pooling of attention maps: ``factor x factor`` blocks of (query, key) pairs summed or averaged.

Long inputs are shown as an overview whose cell ``(i, j)`` covers queries ``i·f .. i·f+f-1`` and keys
``j·f .. j·f+f-1``. Pooling keeps *sums* so that pooled maps can be pooled again exactly (a sum of sums over a sum
of cell counts); edge blocks that run past the last token average over the pairs that exist.
"""

from __future__ import annotations

import math

import numpy as np
import torch

MAX_SIDE = 256  # cells per axis of an overview: longer texts are pooled (zoom for full resolution)


def factor_for(n: int, max_side: int = MAX_SIDE) -> int:
    """Tokens per cell so that ``n`` tokens fit in ``max_side`` cells."""
    return max(1, math.ceil(n / max_side))


def pool_sum(values: torch.Tensor, factor: int) -> torch.Tensor:
    """Sum over ``factor x factor`` blocks of the last two axes (float32; edge blocks sum what exists).

    Sum pooling is average pooling with a divisor of one: PyTorch's pooling kernel is about three times faster than
    a reshape and sum here, which matters at 2048 tokens (one call per layer and pass)."""
    values = values.float() if values.dtype != torch.float32 else values
    if factor <= 1:
        return values
    lead, (rows, cols) = values.shape[:-2], values.shape[-2:]
    pooled = torch.nn.functional.avg_pool2d(
        values.reshape(1, -1, rows, cols), factor, stride=factor, ceil_mode=True, divisor_override=1
    )
    return pooled.reshape(*lead, *pooled.shape[-2:])


def pool_sum_rows(values: torch.Tensor, factor: int, rows: int = 1024) -> torch.Tensor:
    """:func:`pool_sum` of a large (e.g. bool) map, converting ``rows`` rows to float32 at a time."""
    if factor <= 1 or values.shape[-2] <= rows:
        return pool_sum(values, factor)
    rows = max(factor, rows // factor * factor)
    return torch.cat([pool_sum(values[..., a : a + rows, :], factor) for a in range(0, values.shape[-2], rows)], -2)


def pool_columns(values: torch.Tensor, factor: int, cells: torch.Tensor, n_cells: int) -> torch.Tensor:
    """Sums over ``factor``-row blocks of ``values [..., R, C]`` and over the column cells ``cells`` (``[C]``, the
    cell of each column: columns need not be contiguous) → ``[..., ceil(R / factor), n_cells]`` (float32)."""
    values = values.float() if values.dtype != torch.float32 else values
    lead, (rows, cols) = values.shape[:-2], values.shape[-2:]
    if factor > 1:
        values = torch.nn.functional.avg_pool2d(
            values.reshape(1, -1, rows, cols), (factor, 1), stride=(factor, 1), ceil_mode=True, divisor_override=1
        ).reshape(*lead, -1, cols)
    out = torch.zeros((*values.shape[:-1], n_cells), dtype=torch.float32, device=values.device)
    return out.index_add_(-1, cells.to(values.device), values)


def cell_counts(rows: int, cols: int, factor: int) -> np.ndarray:
    """Pairs per pooled cell, ``[ceil(rows/f), ceil(cols/f)]`` (smaller along the last row and column)."""
    per_row = np.minimum(factor, rows - factor * np.arange(math.ceil(rows / factor)))
    per_col = np.minimum(factor, cols - factor * np.arange(math.ceil(cols / factor)))
    return (per_row[:, None] * per_col[None, :]).astype(np.float32)


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of the last two axes of a full-resolution map (float32)."""
    values = np.asarray(values, dtype=np.float32)
    if factor <= 1:
        return values
    rows, cols = values.shape[-2:]
    sums = pool_sum(torch.from_numpy(values), factor).numpy()
    return sums / cell_counts(rows, cols, factor)


def repool_mean(sums: np.ndarray, rows: int, cols: int, inner: int, outer: int) -> np.ndarray:
    """Means over ``outer x outer`` blocks of a map already pooled to sums over ``inner x inner`` blocks of a
    ``rows x cols`` original: exact, because it adds sums and counts."""
    counts = cell_counts(rows, cols, inner)
    if outer <= 1:
        return (sums / counts).astype(np.float32)
    total = pool_sum(torch.from_numpy(np.ascontiguousarray(sums, dtype=np.float32)), outer).numpy()
    return total / pool_sum(torch.from_numpy(counts), outer).numpy()
