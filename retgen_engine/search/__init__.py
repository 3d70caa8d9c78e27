"""Dense retrieval of patterns: encoders, the thin faiss index layer, the energy model and the
retrieval distribution over continuation counts."""
