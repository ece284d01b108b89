"""The embedding cache: least recently used out first, bounded in bytes, entries of different models apart."""

from __future__ import annotations

import torch

from model_core import ImageFeatures
from service.embedding_cache import CachedImage, EmbeddingCache


def entry(nbytes_per_tensor: int = 400) -> CachedImage:
    n = nbytes_per_tensor // 4
    feats = ImageFeatures(torch.zeros(1, n), [torch.zeros(1, n), torch.zeros(1, n)])
    return CachedImage(feats, (10, 10))  # 3 tensors: 1200 bytes


def test_least_recently_used_is_evicted_past_the_byte_bound():
    sizes = []
    cache = EmbeddingCache(max_bytes=3000, on_change=sizes.append)
    cache.put(("m", "", "a"), entry())
    cache.put(("m", "", "b"), entry())
    assert cache.get(("m", "", "a")) is not None  # a is now the most recent
    cache.put(("m", "", "c"), entry())
    assert ("m", "", "b") not in cache
    assert ("m", "", "a") in cache and ("m", "", "c") in cache
    assert cache.nbytes == 2400 and sizes[-1] == 2400


def test_an_entry_larger_than_the_bound_is_not_kept():
    cache = EmbeddingCache(max_bytes=1000)
    cache.put(("m", "", "a"), entry())
    assert len(cache) == 0 and cache.nbytes == 0


def test_replacing_a_key_does_not_double_count():
    cache = EmbeddingCache(max_bytes=10_000)
    cache.put(("m", "", "a"), entry())
    cache.put(("m", "", "a"), entry())
    assert cache.nbytes == 1200 and len(cache) == 1


def test_models_do_not_share_entries():
    cache = EmbeddingCache(max_bytes=10_000)
    cache.put(("sam2.1_hiera_tiny@1024", "", "img"), entry())
    assert cache.get(("sam2.1_hiera_large@1024", "", "img")) is None
