"""Vectorized MinHash signatures over word shingles, and LSH band parameters.

A signature is `num_perm` uint32 values: for each of `num_perm` multiply-shift hash functions, the
minimum over the document's shingle hashes. The fraction of equal positions between two signatures
estimates the Jaccard similarity of their shingle sets. Signatures are computed with numpy over all
shingles at once (no Python loop per shingle and permutation), which is what makes the whole
ingest path faster than per-shingle hashing. LSH bands of signatures get 64-bit keys from `band_keys`,
also vectorised.
"""

import functools
import hashlib
import re

import numpy as np

_WORD = re.compile(r"\w+")
_MASK64 = (1 << 64) - 1
_MIX = np.uint64(0x9E3779B97F4A7C15)
_CACHE_LIMIT = 1_000_000


class MinHasher:
    """Deterministic MinHash signatures of word n-gram shingles (same seed, same signature, any process)."""

    def __init__(self, num_perm: int = 128, shingle_size: int = 5, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        rng = np.random.Generator(np.random.PCG64(seed))
        self._a = (rng.integers(0, 1 << 63, size=(num_perm, 1), dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self._b = rng.integers(0, 1 << 63, size=(num_perm, 1), dtype=np.uint64)
        self._powers = np.array([pow(0x100000001B3, k, 1 << 64) for k in range(shingle_size)], dtype=np.uint64)
        self._word_hash: dict[str, int] = {}

    def _hash_words(self, words: list[str]) -> np.ndarray:
        cache = self._word_hash
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        out = np.empty(len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            h = cache.get(w)
            if h is None:
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                cache[w] = h
            out[i] = h
        return out

    def word_hashes(self, text: str) -> np.ndarray:
        """64-bit hashes of the case-folded words of `text` (also used for token-frequency profiles)."""
        return self._hash_words(_WORD.findall(text.casefold()))

    def shingle_hashes(self, word_hashes: np.ndarray) -> np.ndarray:
        """32-bit hashes (as uint64) of the word n-grams."""
        if len(word_hashes) == 0:
            return np.zeros(1, dtype=np.uint64)
        n = min(self.shingle_size, len(word_hashes))
        count = len(word_hashes) - n + 1
        combined = np.zeros(count, dtype=np.uint64)
        for k in range(n):
            combined += word_hashes[k : k + count] * self._powers[k]
        combined ^= combined >> np.uint64(29)
        combined *= _MIX
        return combined >> np.uint64(32)

    def signature_of(self, word_hashes: np.ndarray) -> np.ndarray:
        """The uint32 MinHash signature of a document given its word hashes."""
        shingles = np.unique(self.shingle_hashes(word_hashes))
        permuted = (self._a * shingles[np.newaxis, :] + self._b) >> np.uint64(32)
        return permuted.min(axis=1).astype(np.uint32)

    def signature(self, text: str) -> np.ndarray:
        """The uint32 MinHash signature of `text`."""
        return self.signature_of(self.word_hashes(text))


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity: the fraction of equal signature positions, along the last axis (so one
    signature against a stack of them gives one estimate each)."""
    return np.count_nonzero(a == b, axis=-1) / a.shape[-1]


def containment_estimate(sig: np.ndarray, others: np.ndarray, min_positions: int = 16) -> np.ndarray:
    """Estimated share of the shingles of `sig`'s document found in each of `others`' documents.

    At a position where A's minimum is at most B's, the minimum of A | B lies in A (probability |A| / |A | B|);
    where they are equal it lies in A & B (probability J). The equal positions over the positions where A's value
    is the smaller estimate |A & B| / |A|, from the signatures alone. Fewer than `min_positions` such positions (A
    much smaller than B) are too few to estimate from: 0.
    """
    equal = np.count_nonzero(others == sig, axis=-1)
    smaller = np.count_nonzero(sig <= others, axis=-1)
    return np.where(smaller >= min_positions, equal / np.maximum(smaller, 1), 0.0)


@functools.cache
def _band_multipliers(bands: int, rows: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(0xBA5D))
    return (rng.integers(0, 1 << 63, size=(bands, rows), dtype=np.uint64) << np.uint64(1)) | np.uint64(1)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """The 64-bit key of each LSH band of each signature: (n, num_perm) uint32 -> (n, bands) uint64.

    A multilinear hash (sum of the band's values times fixed random odd multipliers, modulo 2**64): two
    different bands meet with probability about 2**-32. Every position has its own multiplier, so equal
    values in two different bands give different keys and one table can hold all the bands; the
    multipliers are fixed, so keys are the same in every process.
    """
    values = signatures[:, : bands * rows].reshape(len(signatures), bands, rows).astype(np.uint64)
    values *= _band_multipliers(bands, rows)
    return values.sum(axis=2, dtype=np.uint64)


def _collision_probability(s: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - s**rows) ** bands


def _area(y: np.ndarray, x: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2.0)


@functools.cache
def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.1) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive and false-negative areas.

    The criterion of datasketch's MinHashLSH: the area under the collision curve below the threshold
    (pairs that collide but should not) and the area above it where pairs fail to collide. Candidates
    are verified against the threshold with their signatures afterwards, so a false positive costs only
    a comparison while a false negative is a missed duplicate: false negatives weigh 0.9 by default
    (14 bands of 9 rows for 128 permutations at 0.8: a pair at Jaccard 0.85 collides with p = 0.975).
    """
    best = (num_perm, 1)
    best_err = float("inf")
    below = np.linspace(0.0, threshold, 200)
    above = np.linspace(threshold, 1.0, 200)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = _area(_collision_probability(below, bands, rows), below)
            fn = _area(1.0 - _collision_probability(above, bands, rows), above)
            err = false_positive_weight * fp + (1.0 - false_positive_weight) * fn
            if err < best_err:
                best_err, best = err, (bands, rows)
    return best
