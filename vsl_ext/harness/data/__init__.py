"""Data for the training harness: SCAN precomp splits, vocabulary, synthetic demo data."""
from .precomp import PrecompSplit, epoch_batches, pad_tokens, read_captions, resolve_data_dir, split_paths
from .vocab import Vocabulary, tokenize

__all__ = ["PrecompSplit", "Vocabulary", "epoch_batches", "pad_tokens", "read_captions", "resolve_data_dir",
           "split_paths", "tokenize"]
