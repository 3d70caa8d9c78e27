"""A LlamaIndex query engine over RETGEN, offline: VectorStoreIndex on RetgenVectorStore,
energy reranking, the RETGEN LLM and a streamed response with its source nodes, with the
index's vector store as the generator's document memory.

Our embedding model and LLM are passed explicitly (LlamaIndex's defaults are OpenAI's).
``RetgenLLM(memory=store)`` makes the index's vector store the model's document memory: the
nodes the index retrieves are the passages the generator copies from. A note is inserted
through LlamaIndex (``index.insert``) and the answer is printed with the memory passage each
token came from (trace entries of kind ``"passage"``: the node and its source document),
collected from LlamaIndex's own instrumentation events; ``index.delete_ref_doc`` takes the
note out of both.

    python examples/llama_index_query_engine.py
"""
from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from llama_index.core import Document, PromptTemplate, StorageContext, VectorStoreIndex
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMCompletionEndEvent

from retgen_engine import load_encoder
from retgen_integrations.llama_index import (RetgenEmbedding, RetgenEnergyRerank, RetgenLLM,
                                             RetgenVectorStore)

from _shared import (NOTE, NOTE_ID, NOTE_QUESTION,  # examples/_shared.py
                     sample_engine, sample_paragraphs)


# RETGEN continues text (it follows no instructions): the context, then the text to continue
CONTINUE_QA = PromptTemplate("{context_str}\n{query_str}")


def documents() -> list[Document]:
    return [Document(text=p, metadata={"para": i}, id_=f"para-{i}")
            for i, p in enumerate(sample_paragraphs())]


class RetgenTraces(BaseEventHandler):
    """Keeps the per-token trace of every RETGEN completion (streamed or not) that ends."""

    traces: list[list[dict]] = []

    @classmethod
    def class_name(cls) -> str:
        return "RetgenTraces"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, LLMCompletionEndEvent) and event.response is not None:
            trace = event.response.additional_kwargs.get("retgen_trace")
            if trace is not None:
                self.traces.append(trace)


def passage_sources(token: dict) -> list[dict]:
    """The memory passages a generated token was copied from, largest share first."""
    return [e for e in token["trace"] if e["kind"] == "passage"]


def main() -> None:
    t0 = time.perf_counter()
    encoder = load_encoder("minilm", dtype="bfloat16")
    engine = sample_engine(encoder)
    embed = RetgenEmbedding(encoder)
    store = RetgenVectorStore()
    index = VectorStoreIndex.from_documents(
        documents(), storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed)
    # memory=store: the engine reads its document memory from the index's vector store.
    # Greedy (top_k=1) with a mild repetition penalty, so that copying is easy to follow.
    llm = RetgenLLM(engine=engine, memory=store, max_new_tokens=24, top_k=1,
                    repetition_penalty=1.2)
    # a document inserted through LlamaIndex: retrieved by the index, copied by the generator
    index.insert(Document(text=NOTE, metadata={"para": "note"}, id_=NOTE_ID))
    query_engine = index.as_query_engine(
        llm=llm, similarity_top_k=6, streaming=True, text_qa_template=CONTINUE_QA,
        node_postprocessors=[RetgenEnergyRerank(embed_model=embed, top_n=2)])
    traces = RetgenTraces()
    get_dispatcher().add_event_handler(traces)

    print(f"memory: {len(engine.memory)} documents, the index's vector store "
          f"({len(store.client)} nodes)")
    response = query_engine.query(NOTE_QUESTION)
    print("answer (streamed):", end=" ", flush=True)
    pieces = []
    for piece in response.response_gen:
        print(piece, end="", flush=True)
        pieces.append(piece)
    print()
    for sn in response.source_nodes:
        md = sn.node.metadata
        print(f"  source para {md['para']}: relevance={sn.score:.3f} "
              f"energy={md['retgen_energy']:.3f} {sn.node.get_content()[:70]!r}...")
    assert "".join(pieces) and len(response.source_nodes) == 2
    trace = traces.traces[-1]
    print("where each token came from (the memory passage with the largest share of its "
          "probability; node id, source document):")
    for t in trace:
        src = passage_sources(t)
        where = (f"node {src[0]['passage'][:8]}.. of {src[0]['document']} "
                 f"({src[0]['weight']:.0%}): {src[0]['snippet']!r}" if src else "no memory passage")
        print(f"  {t['token']!r:>14} <- {where}")
    copied = Counter(passage_sources(t)[0]["document"] for t in trace if passage_sources(t))
    print(f"{sum(copied.values())} of {len(trace)} tokens drew on memory passages: "
          + ", ".join(f"{d} x{n}" for d, n in copied.most_common(4)))
    assert "".join(t["text"] for t in trace) == "".join(pieces)
    assert copied[NOTE_ID] > 0, "no token was copied from the note"

    # deleted through LlamaIndex: neither the index nor the generator reads it any more
    index.delete_ref_doc(NOTE_ID)
    again = index.as_query_engine(llm=llm, similarity_top_k=2,
                                  text_qa_template=CONTINUE_QA).query(NOTE_QUESTION)
    left = [e for t in traces.traces[-1] for e in passage_sources(t) if e["document"] == NOTE_ID]
    hits = [sn.node.ref_doc_id for sn in again.source_nodes]
    print(f"after index.delete_ref_doc({NOTE_ID!r}): retrieved {hits}; "
          f"tokens from the note: {len(left)}")
    assert NOTE_ID not in hits and not left
    get_dispatcher().event_handlers.remove(traces)

    with tempfile.TemporaryDirectory(prefix="retgen-li-") as tmp:  # removed afterwards
        persist = Path(tmp) / "storage"
        index.storage_context.persist(persist_dir=str(persist))
        again = VectorStoreIndex.from_vector_store(RetgenVectorStore.from_persist_dir(persist),
                                                   embed_model=embed)
        top = again.as_retriever(similarity_top_k=1).retrieve("ships of the navy in the war")
    print(f"reloaded from {persist}: top node para {top[0].node.metadata['para']}; "
          f"{time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
