"""Shared helpers for the engine tests (imported by name; pytest puts tests/ on sys.path)."""
from __future__ import annotations

from pathlib import Path

from retgen_engine import RETGENConfig

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "wikitext2_sample.tokens"
SHARED = ROOT.parent / "shared" / "data"


def hashing_config(**index) -> RETGENConfig:
    cfg = RETGENConfig()
    cfg.encoder.name = "hashing:64"
    for k, v in index.items():
        setattr(cfg.index, k, v)
    return cfg
