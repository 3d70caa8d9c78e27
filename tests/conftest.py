from __future__ import annotations

from pathlib import Path

import pytest

from retgen_engine import HashingEncoder, RetgenEngine
from retgen_testutil import SAMPLE, hashing_config


@pytest.fixture(scope="session")
def sample_corpus() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model over the bundled sample corpus with the hashing encoder (seconds to build),
    with the built-in mixture weights (not tuned: tests read the defaults' behaviour; the
    tuning has its own, tests/test_tuning.py)."""
    out = tmp_path_factory.mktemp("models") / "tiny"
    RetgenEngine.build(SAMPLE, out=out, config=hashing_config(), encoder=HashingEncoder(64),
                       progress=False, tune=False)
    return out


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir) -> RetgenEngine:
    return RetgenEngine.load(tiny_model_dir)
