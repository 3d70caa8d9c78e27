"""The examples run end to end, offline, with the real MiniLM encoder (one shared model), and
leave nothing behind in the temp dir."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example_model(tmp_path_factory) -> Path:
    from retgen_engine import RetgenEngine, load_encoder

    out = tmp_path_factory.mktemp("example") / "model"  # what examples/_shared.py builds
    RetgenEngine.sample(load_encoder("minilm", dtype="bfloat16"), out=out)
    return out


def run_example(script: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``examples/<script>`` with ``tmp`` (empty) as its TMPDIR; check that it is still
    empty of RETGEN's leftovers afterwards."""
    assert not any(tmp.iterdir())
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script)],
                          env={**os.environ, "TMPDIR": str(tmp), **env},
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    left = sorted(p.name for p in tmp.iterdir() if p.name.startswith("retgen-"))
    assert not left, f"{script} left {left} in the temp dir"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("script, expect", [
    ("langchain_rag.py", "usage: {'input_tokens'"),
    ("llama_index_query_engine.py", "reloaded from"),
    ("agent_tool.py", "continue_text({'prompt'"),
])
def test_example_runs(example_model, tmp_path, script, expect):
    proc = run_example(script, tmp_path, RETGEN_EXAMPLE_MODEL=str(example_model))
    assert expect in proc.stdout


@pytest.mark.slow
def test_example_builds_its_model_in_memory(tmp_path, monkeypatch):
    """Without RETGEN_EXAMPLE_MODEL an example builds the sample model itself, on no disk."""
    monkeypatch.delenv("RETGEN_EXAMPLE_MODEL", raising=False)
    assert "continue_text({'prompt'" in run_example("agent_tool.py", tmp_path).stdout
