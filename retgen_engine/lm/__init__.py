"""The language model: the log-space mixture of back-off, cache and retrieval, sampling,
generation with traces, and perplexity evaluation."""
