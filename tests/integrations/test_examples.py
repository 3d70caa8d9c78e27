"""The examples run end to end, offline, with the real MiniLM encoder (one shared model)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example_model(tmp_path_factory) -> Path:
    from retgen_engine import RETGENConfig, RetgenEngine, load_encoder

    cfg = RETGENConfig()
    cfg.patterns = type(cfg.patterns)(lengths=[2, 3], min_counts=[3, 3])
    out = tmp_path_factory.mktemp("example") / "model"
    RetgenEngine.build(str(ROOT / "examples" / "data" / "wikitext2_sample.tokens"), out=out,
                       config=cfg, encoder=load_encoder("minilm", dtype="bfloat16"),
                       progress=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("script, expect", [
    ("langchain_rag.py", "usage: {'input_tokens'"),
    ("llama_index_query_engine.py", "reloaded from"),
    ("agent_tool.py", "continue_text({'prompt'"),
])
def test_example_runs(example_model, script, expect):
    env = {**os.environ, "RETGEN_EXAMPLE_MODEL": str(example_model)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expect in proc.stdout
