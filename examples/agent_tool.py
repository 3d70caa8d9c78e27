"""RETGEN retrieval and generation as LangChain tools an agent can call.

No hosted LLM: the "agent" here is a fixed two-step plan that calls the tools through the
standard tool interface (``tool.invoke`` with a ToolCall dict, returning ToolMessages), as
any tool-calling agent would.

    python examples/agent_tool.py
"""
from __future__ import annotations

import json
import time

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, tool

from retgen_engine import load_encoder
from retgen_integrations.langchain import (ChatRetgen, RetgenEmbeddings, RetgenRetriever,
                                           RetgenVectorStore)

from _shared import sample_engine, sample_paragraphs  # examples/_shared.py


def make_tools(retriever: RetgenRetriever, chat: ChatRetgen) -> list[BaseTool]:
    @tool
    def search_corpus(query: str, k: int = 2) -> str:
        """Find passages of the RETGEN corpus about `query`; returns JSON with scores."""
        docs = retriever.invoke(query, k=k)
        return json.dumps([{"text": d.page_content[:200], "score": round(d.metadata["score"], 3),
                            "energy": round(d.metadata["energy"], 3)} for d in docs])

    @tool
    def continue_text(prompt: str, max_tokens: int = 20) -> str:
        """Continue `prompt` with the RETGEN model; returns the text and its first sources."""
        msg = chat.invoke(prompt, max_tokens=max_tokens)
        sources = [t["trace"][0]["snippet"] for t in msg.response_metadata["retgen_trace"][:3]
                   if t["trace"]]
        return json.dumps({"text": msg.content, "sources": sources})

    return [search_corpus, continue_text]


def main() -> None:
    t0 = time.perf_counter()
    encoder = load_encoder("minilm", dtype="bfloat16")
    engine = sample_engine(encoder)
    store = RetgenVectorStore.from_texts(sample_paragraphs(), RetgenEmbeddings(encoder=encoder))
    tools = {t.name: t for t in make_tools(RetgenRetriever(vectorstore=store),
                                           ChatRetgen(engine=engine, seed=0))}
    for t in tools.values():
        print(f"tool {t.name}: args {list(t.args)} - {t.description.splitlines()[0]}")

    plan = [{"name": "search_corpus", "args": {"query": "hurricane damage", "k": 2},
             "id": "call-1", "type": "tool_call"},
            {"name": "continue_text", "args": {"prompt": "The hurricane", "max_tokens": 15},
             "id": "call-2", "type": "tool_call"}]
    for call in plan:
        out = tools[call["name"]].invoke(call)
        assert isinstance(out, ToolMessage) and out.tool_call_id == call["id"]
        result = json.loads(out.content)
        print(f"\n{call['name']}({call['args']}) ->\n{json.dumps(result, indent=1)[:600]}")
        assert result
    print(f"\n{time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
