import pytest

datasets = pytest.importorskip("datasets")

from retgen_engine import HashingEncoder, RetgenEngine  # noqa: E402
from retgen_engine.cli import main  # noqa: E402

from retgen_testutil import hashing_config  # noqa: E402


def test_build_from_a_local_dataset(tmp_path):
    ds = datasets.Dataset.from_dict({"text": ["The cat sat on the mat.", "A dog sat on a log.",
                                              "The cat and the dog."] * 5, "id": list(range(15))})
    eng = RetgenEngine.build(dataset=ds, config=hashing_config(), encoder=HashingEncoder(64),
                             progress=False)
    assert eng.tokenizer.mode == "text" and len(eng.doc_names) == 15
    res = eng.generate("The cat", max_new_tokens=5, seed=0)
    assert res.completion_tokens == 5 and res.tokens[0].trace
    with pytest.raises(ValueError, match="no column 'body'"):
        RetgenEngine.build(dataset=ds, text_column="body", config=hashing_config(),
                           encoder=HashingEncoder(64), progress=False)
    # the CLI reads a dataset saved to disk
    ds.save_to_disk(tmp_path / "ds")
    cfg = tmp_path / "c.json"
    hashing_config().save(cfg)
    assert main(["build", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "m"),
                 "--config", str(cfg), "--quiet"]) == 0
