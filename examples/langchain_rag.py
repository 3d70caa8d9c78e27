"""RAG with LangChain and RETGEN, offline: retriever -> prompt -> RETGEN chat model, streamed.

Builds a small RETGEN model from examples/data/wikitext2_sample.tokens (CC BY-SA) in a temp
dir (or reuses RETGEN_EXAMPLE_MODEL), indexes a few passages with the real MiniLM encoder
and streams an answer token by token, printing where the first tokens came from.

    python examples/langchain_rag.py
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from retgen_engine import RETGENConfig, RetgenEngine, load_encoder
from retgen_integrations.langchain import (ChatRetgen, RetgenEmbeddings, RetgenRetriever,
                                           RetgenVectorStore)

DATA = Path(__file__).parent / "data" / "wikitext2_sample.tokens"


def demo_model(encoder) -> RetgenEngine:
    """A small RETGEN model (2- and 3-token patterns seen >= 3 times) built in a temp dir."""
    if os.environ.get("RETGEN_EXAMPLE_MODEL"):
        return RetgenEngine.load(os.environ["RETGEN_EXAMPLE_MODEL"], encoder=encoder)
    cfg = RETGENConfig()
    cfg.patterns = type(cfg.patterns)(lengths=[2, 3], min_counts=[3, 3])
    out = Path(tempfile.mkdtemp(prefix="retgen-example-")) / "model"
    return RetgenEngine.build(str(DATA), out=out, config=cfg, encoder=encoder, progress=False)


def passages(n: int = 200) -> list[str]:
    """Paragraphs of the sample corpus, as the documents to retrieve from."""
    lines = [ln.strip() for ln in DATA.read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if len(ln.split()) > 30 and not ln.startswith("=")][:n]


def main() -> None:
    t0 = time.perf_counter()
    encoder = load_encoder("minilm", dtype="bfloat16")
    engine = demo_model(encoder)
    emb = RetgenEmbeddings(encoder=encoder)
    store = RetgenVectorStore.from_texts(passages(), emb,
                                         metadatas=[{"para": i} for i in range(200)])
    retriever = RetgenRetriever(vectorstore=store, k=2, search_type="energy")
    chat = ChatRetgen(engine=engine, max_tokens=40, seed=0, temperature=0.8)

    def fmt(docs):
        return "\n".join(d.page_content[:300] for d in docs)

    prompt = ChatPromptTemplate.from_messages([
        ("system", "{context}"),
        ("human", "{question}"),
    ])
    chain = {"context": retriever | fmt, "question": RunnablePassthrough()} | prompt | chat

    question = "The history of the railway"
    for d in retriever.invoke(question):
        print(f"retrieved para {d.metadata['para']}: score={d.metadata['score']:.3f} "
              f"energy={d.metadata['energy']:.3f}  {d.page_content[:70]!r}...")
    print("\nanswer (streamed):", end=" ", flush=True)
    chunks = []
    for chunk in chain.stream(question):
        print(chunk.content, end="", flush=True)
        chunks.append(chunk)
    print()
    traced = [c.response_metadata["retgen_trace"][0] for c in chunks
              if c.response_metadata.get("retgen_trace")]
    for t in traced[:3]:
        src = t["trace"][0] if t["trace"] else None
        print(f"  token {t['token']!r}: p={math.exp(t['logprob']):.3f}"
              + (f", from {src['kind']} {src['snippet']!r}" if src else ""))
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    usage = full.usage_metadata
    assert full.content and len(traced) == usage["output_tokens"] == 40, (full.content, usage)
    print(f"usage: {usage}; {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
