"""The examples run end to end, offline, with the real MiniLM encoder (one shared model), and
leave nothing behind in the temp dir."""
from __future__ import annotations

import json
import os
import re
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


def check_memory_output(out: str, source: str) -> None:
    """The RAG examples' document memory: the note added through the framework was copied
    (each token said to come from it is in it, its snippet ends with the token, the share is
    a percentage), and after the framework deleted it nothing was retrieved or copied from it."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from _shared import NOTE, NOTE_ID
    finally:
        sys.path.remove(str(ROOT / "examples"))
    assert "memory: 201 documents" in out
    lines = re.findall(r"^ +'(.+?)' .*<- " + source + r" \((\d+)%\): '(.*)'$", out, re.M)
    assert len(lines) >= 5, out
    words = NOTE.split()
    for tok, share, snippet in lines:
        assert tok in words and snippet.endswith(tok) and 0 <= int(share) <= 100
    n = re.search(rf"(\d+) of 24 tokens drew on memory passages: .*\b{NOTE_ID} x(\d+)", out)
    assert n and int(n[2]) == len(lines) and int(n[1]) >= int(n[2]), out
    gone = re.search(rf"after .*{NOTE_ID!r}.*: retrieved (\[.*\]); tokens from the note: 0", out)
    assert gone and NOTE_ID not in gone[1], out


@pytest.mark.slow
@pytest.mark.parametrize("script, expect, source", [
    ("langchain_rag.py", "usage: {'input_tokens'", r"passage note-harbour-line"),
    ("llama_index_query_engine.py", "reloaded from", r"node [0-9a-f]{8}\.\. of note-harbour-line"),
])
def test_example_runs(example_model, tmp_path, script, expect, source):
    proc = run_example(script, tmp_path, RETGEN_EXAMPLE_MODEL=str(example_model))
    assert expect in proc.stdout
    check_memory_output(proc.stdout, source)


def check_agent_output(out: str) -> None:
    """The agent (a scripted stand-in model, said so) chose both tools with their arguments,
    each ran for real and its ToolMessage went back; the answer carries the generated text
    and the sources of both tools."""
    assert "no tool-calling chat model runs offline" in out and "GenericFakeChatModel" in out
    assert "search_corpus({'query': 'string', 'k': 'integer'})" in out  # the bound schemas
    assert "continue_text({'prompt': 'string', 'max_tokens': 'integer'})" in out
    assert ("step 1: agent calls search_corpus({'query': 'Little Rock Arsenal seized in 1861', "
            "'k': 2})\n  -> ToolMessage(call-1, success): [{\"para\": ") in out
    assert ("step 2: agent calls continue_text({'prompt': 'The arsenal was', 'max_tokens': 20})"
            "\n  -> ToolMessage(call-2, success): {\"prompt\": \"The arsenal was\", ") in out
    answer = out.split("step 3: final answer\n", 1)[1]
    # real MiniLM retrieval: the top passages are about the arsenal, with their scores
    paras = re.findall(r"\[para (\d+), score (0\.\d+)\] (.*)", answer)
    assert len(paras) == 2 and all("arsenal" in text.lower() for _, _, text in paras)
    # real RETGEN generation: the tool's text is in the answer, with its traced sources
    text = json.loads(re.search(r'"text": ("(?:[^"\\]|\\.)*")', out.split("call-2, success")[1])[1])
    assert text.strip() and f"The arsenal was{text}" in answer
    assert len(re.findall(r"<- (pattern|ngram|context) \S+@\d+: ", answer)) == 3
    assert "wikitext2_sample.tokens@" in answer and "2 tool results" in out


@pytest.mark.slow
def test_agent_example_runs(example_model, tmp_path):
    proc = run_example("agent_tool.py", tmp_path, RETGEN_EXAMPLE_MODEL=str(example_model))
    check_agent_output(proc.stdout)


@pytest.mark.slow
def test_example_builds_its_model_in_memory(tmp_path, monkeypatch):
    """Without RETGEN_EXAMPLE_MODEL an example builds the sample model itself, on no disk."""
    monkeypatch.delenv("RETGEN_EXAMPLE_MODEL", raising=False)
    check_agent_output(run_example("agent_tool.py", tmp_path).stdout)
