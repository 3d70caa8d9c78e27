"""Exact counts: the n-gram trie, Kneser-Ney back-off, multi-resolution patterns, the context
cache and the cheap count-based features the learned parts read."""
