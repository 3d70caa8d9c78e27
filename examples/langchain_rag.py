"""RAG with LangChain and RETGEN, offline: retriever -> prompt -> RETGEN chat model, streamed.

Builds the small RETGEN sample model in memory (examples/data/wikitext2_sample.tokens,
CC BY-SA; see _shared.py), indexes its paragraphs with the real MiniLM encoder and streams
an answer token by token, printing where the first tokens came from.

    python examples/langchain_rag.py
"""
from __future__ import annotations

import math
import time

from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from retgen_engine import load_encoder
from retgen_integrations.langchain import (ChatRetgen, RetgenEmbeddings, RetgenRetriever,
                                           RetgenVectorStore)

from _shared import sample_engine, sample_paragraphs  # examples/_shared.py


def main() -> None:
    t0 = time.perf_counter()
    encoder = load_encoder("minilm", dtype="bfloat16")
    engine = sample_engine(encoder)
    emb = RetgenEmbeddings(encoder=encoder)
    store = RetgenVectorStore.from_texts(sample_paragraphs(), emb,
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
