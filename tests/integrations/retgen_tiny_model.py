"""The tiny RETGEN model shared by the integration tests (built once per process, lazily).

LangChain's standard suites read their parameters from class properties, not fixtures, so
the model directory is reachable as :func:`tiny_model_path` as well as through fixtures.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

from retgen_engine import HashingEncoder, RETGENConfig, RetgenEngine

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "data" / "wikitext2_sample.tokens"

_lock = threading.Lock()
_model_dir: list[Path] = []


def build_tiny_model(out: Path) -> Path:
    cfg = RETGENConfig()
    cfg.encoder.name = "hashing:64"
    # the built-in defaults, not tuned: the tests copy from added documents, which a memory
    # tuned on this tiny corpus's own held-out slice weighs too little (README, build tuning)
    RetgenEngine.build(str(CORPUS), out=out, config=cfg, encoder=HashingEncoder(64),
                       progress=False, tune=False)
    return out


def tiny_model_path() -> Path:
    with _lock:
        if not _model_dir:
            root = Path(tempfile.mkdtemp(prefix="retgen-tiny-"))
            atexit.register(shutil.rmtree, root, True)
            _model_dir.append(build_tiny_model(root / "model"))
        return _model_dir[0]
