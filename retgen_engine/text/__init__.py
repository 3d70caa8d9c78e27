"""Text in: tokenizers (word-level and lossless raw text) and corpus readers into id arrays."""
