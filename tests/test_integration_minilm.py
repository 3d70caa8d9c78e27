"""End to end with the real all-MiniLM-L6-v2 encoder on a slice of WikiText-2."""
import json

import numpy as np
import pytest

from retgen_engine import RETGENConfig, RetgenEngine
from retgen_engine.config import PatternConfig

from retgen_testutil import SHARED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_model(tmp_path_factory, sample_corpus):
    cfg = RETGENConfig()
    cfg.patterns = PatternConfig(lengths=[1, 2, 3], min_counts=[1, 1, 2])
    out = tmp_path_factory.mktemp("minilm") / "model"
    RetgenEngine.build(sample_corpus, out=out, config=cfg, progress=False)
    return out


def test_build_eval_generate_with_minilm(minilm_model, tmp_path):
    eng = RetgenEngine.load(minilm_model)
    assert eng.encoder.dim == 384 and eng.manifest["encoder"]["name"].endswith("all-MiniLM-L6-v2")
    valid = SHARED / "wikitext-2" / "wiki.valid.tokens"
    if valid.exists():
        lines = valid.read_text(encoding="utf-8").splitlines(keepends=True)[:300]
    else:  # a clean clone without shared/: hold out the sample's last lines instead
        lines = (eng.tokenizer.decode(eng.stream_ids[-3000:].tolist()) + "\n").splitlines(True)
    data = tmp_path / "valid.tokens"
    data.write_text("".join(lines), encoding="utf-8")
    rep = eng.perplexity(data)
    assert rep["tokens"] == sum(len(l.split()) + 1 for l in lines)
    assert np.isfinite(rep["perplexity"]) and rep["perplexity"] > 1
    assert rep["retrieval_coverage"] > 0.2
    # retrieval with MiniLM contexts is not worse than the back-off at a small weight
    small = eng.perplexity(data, lam=0.05)
    assert small["perplexity"] < small["backoff_perplexity"] * 1.02

    p = np.exp(eng.next_token_logprobs("The game was released in"))
    assert abs(p.sum() - 1) < 1e-5 and p.min() > 0

    res = eng.generate("The game was released in", max_new_tokens=12, seed=0, top_p=0.9)
    assert res.completion_tokens == 12 and res.text.strip()
    kinds = {e.kind for t in res.tokens for e in t.trace}
    assert "pattern" in kinds  # retrieved patterns carry probability with real embeddings
    json.dumps(res.to_dict())  # traces serialize
