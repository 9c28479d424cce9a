"""Batch profiles (length and token-frequency histograms) and their Jensen-Shannon divergence.

The token histogram counts hashed, case-folded words in a fixed number of buckets, so it needs no
tokenizer and stays comparable across batches and tokenizer versions.
"""

import numpy as np


def length_bin_edges(bins: int) -> np.ndarray:
    """Word-count bin edges, log-spaced (half powers of two) from 1 word; the last bin is open."""
    return np.concatenate([[0.0], 2.0 ** (np.arange(bins - 1) / 2.0), [np.inf]])


class BatchProfile:
    """Accumulates the histograms of one batch's accepted documents."""

    def __init__(self, length_bins: int, token_buckets: int) -> None:
        self.edges = length_bin_edges(length_bins)
        self.length_hist = np.zeros(length_bins, dtype=np.int64)
        self.token_hist = np.zeros(token_buckets, dtype=np.int64)

    def add(self, word_count: int, bucket_ids: np.ndarray, bucket_counts: np.ndarray) -> None:
        self.length_hist[np.searchsorted(self.edges, word_count, side="right") - 1] += 1
        np.add.at(self.token_hist, bucket_ids, bucket_counts)

    def to_dict(self) -> dict[str, list[int]]:
        return {"length_hist": self.length_hist.tolist(), "token_hist": self.token_hist.tolist()}


def jensen_shannon(p: np.ndarray | list[int], q: np.ndarray | list[int]) -> float | None:
    """JS divergence (base 2, in [0, 1]) of two count histograms; None when either is empty or shapes differ."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.sum() == 0 or q.sum() == 0:
        return None
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return max(0.0, min(1.0, 0.5 * kl(p) + 0.5 * kl(q)))
