"""Shared fixtures: one tiny RETGEN model per session (hashing encoder, a few seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest
from retgen_tiny_model import tiny_model_path

from retgen_engine import HashingEncoder, RetgenEngine

@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return tiny_model_path()


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir) -> RetgenEngine:
    return RetgenEngine.load(tiny_model_dir)


@pytest.fixture
def hashing_encoder() -> HashingEncoder:
    return HashingEncoder(64)
