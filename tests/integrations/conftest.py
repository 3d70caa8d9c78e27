"""Shared fixtures: one tiny RETGEN model per session (hashing encoder, a few seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest

from retgen_engine import HashingEncoder, RETGENConfig, RetgenEngine

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "data" / "wikitext2_sample.tokens"


def build_tiny_model(out: Path) -> Path:
    cfg = RETGENConfig()
    cfg.encoder.name = "hashing:64"
    RetgenEngine.build(str(CORPUS), out=out, config=cfg, encoder=HashingEncoder(64),
                       progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("retgen") / "tiny")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir) -> RetgenEngine:
    return RetgenEngine.load(tiny_model_dir)


@pytest.fixture
def hashing_encoder() -> HashingEncoder:
    return HashingEncoder(64)
