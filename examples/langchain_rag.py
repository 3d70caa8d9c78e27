"""RAG with LangChain and RETGEN, offline: retriever -> prompt -> RETGEN chat model, streamed,
with the vector store as the generator's document memory.

Builds the small RETGEN sample model in memory (examples/data/wikitext2_sample.tokens,
CC BY-SA; see _shared.py) and indexes its paragraphs with the real MiniLM encoder in a
RetgenVectorStore. ``ChatRetgen(memory=store)`` makes that store the model's document memory:
the documents the retriever finds are the passages the generator copies from. A note is then
added through LangChain (``add_texts``) and the answer is streamed token by token, each token
printed with the memory passage it was copied from (trace entries of kind ``"passage"``).
Deleting the note through LangChain takes it out of both.

    python examples/langchain_rag.py
"""
from __future__ import annotations

import math
import time
from collections import Counter

from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from retgen_engine import load_encoder
from retgen_integrations.langchain import (ChatRetgen, RetgenEmbeddings, RetgenRetriever,
                                           RetgenVectorStore)

from _shared import (NOTE, NOTE_ID, NOTE_QUESTION,  # examples/_shared.py
                     sample_engine, sample_paragraphs)


def passage_sources(token: dict) -> list[dict]:
    """The memory passages a generated token was copied from, largest share first."""
    return [e for e in token["trace"] if e["kind"] == "passage"]


def main() -> None:
    t0 = time.perf_counter()
    encoder = load_encoder("minilm", dtype="bfloat16")
    engine = sample_engine(encoder)
    emb = RetgenEmbeddings(encoder=encoder)
    paragraphs = sample_paragraphs()
    store = RetgenVectorStore.from_texts(paragraphs, emb,
                                         metadatas=[{"para": i} for i in range(len(paragraphs))],
                                         ids=[f"para-{i}" for i in range(len(paragraphs))])
    retriever = RetgenRetriever(vectorstore=store, k=2, search_type="energy")
    # memory=store: the engine reads its document memory from the retriever's store.
    # Greedy (top_k=1) with a mild repetition penalty, so that copying is easy to follow.
    chat = ChatRetgen(engine=engine, memory=store, max_tokens=24, top_k=1,
                      repetition_penalty=1.2)
    # a document added through LangChain: the retriever finds it, the generator copies from it
    store.add_texts([NOTE], metadatas=[{"para": "note"}], ids=[NOTE_ID])

    def fmt(docs):
        return "\n".join(d.page_content[:300] for d in docs)

    prompt = ChatPromptTemplate.from_messages([
        ("system", "{context}"),
        ("human", "{question}"),
    ])
    chain = {"context": retriever | fmt, "question": RunnablePassthrough()} | prompt | chat

    question = NOTE_QUESTION
    for d in retriever.invoke(question):
        print(f"retrieved para {d.metadata['para']}: score={d.metadata['score']:.3f} "
              f"energy={d.metadata['energy']:.3f}  {d.page_content[:70]!r}...")
    print(f"\nmemory: {len(engine.memory)} documents, the vector store's "
          f"({len(store.store)} records)")
    print("answer (streamed):", end=" ", flush=True)
    chunks = []
    for chunk in chain.stream(question):
        print(chunk.content, end="", flush=True)
        chunks.append(chunk)
    print()
    traced = [c.response_metadata["retgen_trace"][0] for c in chunks
              if c.response_metadata.get("retgen_trace")]
    print("where each token came from (the memory passage with the largest share of its "
          "probability):")
    for t in traced:
        src = passage_sources(t)
        where = (f"passage {src[0]['passage']} ({src[0]['weight']:.0%}): {src[0]['snippet']!r}"
                 if src else "no memory passage")
        print(f"  {t['token']!r:>14} p={math.exp(t['logprob']):.3f} <- {where}")
    copied = Counter(passage_sources(t)[0]["passage"] for t in traced if passage_sources(t))
    print(f"{sum(copied.values())} of {len(traced)} tokens drew on memory passages: "
          + ", ".join(f"{p} x{n}" for p, n in copied.most_common(4)))
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    usage = full.usage_metadata
    assert full.content and len(traced) == usage["output_tokens"] == 24, (full.content, usage)
    assert copied[NOTE_ID] > 0, "no token was copied from the note"

    # deleted through LangChain: neither the retriever nor the generator reads it any more
    store.delete([NOTE_ID])
    again = chat.invoke(question)
    left = [e for t in again.response_metadata["retgen_trace"] for e in passage_sources(t)
            if e["passage"] == NOTE_ID]
    hits = [d.id for d in retriever.invoke(question)]
    print(f"after store.delete([{NOTE_ID!r}]): retrieved {hits}; "
          f"tokens from the note: {len(left)}")
    assert NOTE_ID not in hits and not left
    print(f"usage: {usage}; {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
