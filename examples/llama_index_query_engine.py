"""A LlamaIndex query engine over RETGEN, offline: VectorStoreIndex on RetgenVectorStore,
energy reranking, the RETGEN LLM and a streamed response with its source nodes.

Our embedding model and LLM are passed explicitly (LlamaIndex's defaults are OpenAI's).

    python examples/llama_index_query_engine.py
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from llama_index.core import Document, StorageContext, VectorStoreIndex

from retgen_engine import load_encoder
from retgen_integrations.llama_index import (RetgenEmbedding, RetgenEnergyRerank, RetgenLLM,
                                             RetgenVectorStore)

from _shared import sample_engine, sample_paragraphs  # examples/_shared.py


def documents() -> list[Document]:
    return [Document(text=p, metadata={"para": i}, id_=f"para-{i}")
            for i, p in enumerate(sample_paragraphs())]


def main() -> None:
    t0 = time.perf_counter()
    encoder = load_encoder("minilm", dtype="bfloat16")
    engine = sample_engine(encoder)
    embed = RetgenEmbedding(encoder)
    store = RetgenVectorStore()
    index = VectorStoreIndex.from_documents(
        documents(), storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed)
    llm = RetgenLLM(engine=engine, max_new_tokens=30, seed=0, temperature=0.8)
    query_engine = index.as_query_engine(
        llm=llm, similarity_top_k=6, streaming=True,
        node_postprocessors=[RetgenEnergyRerank(embed_model=embed, top_n=2)])

    response = query_engine.query("ships of the navy in the war")
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
