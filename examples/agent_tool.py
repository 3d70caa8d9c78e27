"""A LangChain tool-calling agent with RETGEN retrieval and RETGEN generation as its tools.

Two tools, each with a pydantic args schema and a description (what the agent's model sees):

* ``search_corpus``: the RetgenRetriever (energy-reranked) over a RetgenVectorStore of the
  sample paragraphs, embedded with the real MiniLM encoder;
* ``continue_text``: ChatRetgen, the RETGEN model continuing a prompt; its result carries the
  corpus sources of the generated tokens (the full per-token trace is the ToolMessage's
  ``artifact``).

They are bound to the agent's chat model the way users do it, ``llm.bind_tools(tools)``, and a
plain loop (langchain-core only) runs the tool calls the model makes and feeds the results
back as ToolMessages until the model answers without a tool call.

No tool-calling chat model runs offline here (RETGEN itself is a plain LM and cannot emit tool
calls), so the agent's *decisions* come from a stand-in: langchain-core's
``GenericFakeChatModel``, replaying a scripted policy. Everything else is real: the tools run
(MiniLM retrieval, RETGEN generation with traces), the loop feeds ToolMessages back, and the
final answer is composed from those ToolMessages. To use a real model, replace the body of
:func:`agent_model` (marked "PLUG YOUR MODEL IN HERE"); nothing else changes.

    python examples/agent_tool.py
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator, Optional

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (AIMessage, BaseMessage, HumanMessage, SystemMessage,
                                     ToolMessage)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

from retgen_engine import load_encoder
from retgen_integrations.langchain import (ChatRetgen, RetgenEmbeddings, RetgenRetriever,
                                           RetgenVectorStore)

from _shared import sample_engine, sample_paragraphs  # examples/_shared.py

QUESTION = ("What happened at the Little Rock Arsenal in 1861? Then write a sentence about "
            "the arsenal in the style of the corpus, and cite where it came from.")
SYSTEM = ("You answer questions about a small Wikipedia corpus. Use search_corpus to find "
          "passages and continue_text to generate text with the corpus's own language model; "
          "cite the passages and the generated tokens' sources.")


# --- the tools ---------------------------------------------------------------------------

class SearchArgs(BaseModel):
    query: str = Field(description="What to look for, in a few words")
    k: int = Field(2, ge=1, le=5, description="How many passages to return")


class ContinueArgs(BaseModel):
    prompt: str = Field(description="The beginning of the text RETGEN should continue")
    max_tokens: int = Field(20, ge=1, le=60, description="How many tokens to generate")


def make_tools(retriever: RetgenRetriever, chat: ChatRetgen) -> list[BaseTool]:
    @tool("search_corpus", args_schema=SearchArgs, response_format="content_and_artifact")
    def search_corpus(query: str, k: int = 2) -> tuple[str, list]:
        """Search the RETGEN corpus (Wikipedia paragraphs) for passages about a topic.
        Returns the passages with their paragraph number and relevance score."""
        docs = retriever.invoke(query, k=k)
        hits = [{"para": d.metadata["para"], "score": round(d.metadata["score"], 3),
                 "text": d.page_content[:240]} for d in docs]
        return json.dumps(hits, ensure_ascii=False), docs

    @tool("continue_text", args_schema=ContinueArgs, response_format="content_and_artifact")
    def continue_text(prompt: str, max_tokens: int = 20) -> tuple[str, list]:
        """Continue a prompt with RETGEN, the corpus's retrieval-based language model.
        Returns the generated text and, for its first tokens, the corpus passages that
        carried their probability (document, offset, snippet)."""
        msg = chat.invoke(prompt, max_tokens=max_tokens)
        trace = msg.response_metadata["retgen_trace"]
        sources = [{"token": t["token"], "kind": t["trace"][0]["kind"],
                    "document": t["trace"][0]["document"], "offset": t["trace"][0]["offset"],
                    "snippet": t["trace"][0]["snippet"]}
                   for t in trace if t["trace"]][:3]
        content = {"prompt": prompt, "text": msg.content, "sources": sources}
        return json.dumps(content, ensure_ascii=False), trace

    for t in (search_corpus, continue_text):  # a model's bad arguments come back to it as
        t.handle_validation_error = _invalid   # an error ToolMessage instead of a crash
    return [search_corpus, continue_text]


def _invalid(err: Exception) -> str:
    return f"invalid arguments: {err}"


# --- the agent's model ---------------------------------------------------------------------

Turn = Callable[[list[BaseMessage]], AIMessage]


class ScriptedToolCaller(GenericFakeChatModel):
    """STAND-IN for a tool-calling chat model (none runs offline here).

    langchain-core's GenericFakeChatModel, with what a provider's chat model adds:
    ``bind_tools`` (the tools' JSON schemas bound as the ``tools`` argument of every call)
    and turns that see the conversation: each entry of ``messages`` maps the messages so far
    to the next AIMessage. It only calls tools it was bound to.
    """

    messages: Iterator[Turn]

    def bind_tools(self, tools: list[Any], **kwargs: Any):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                  run_manager: Any = None, tools: Optional[list[dict]] = None,
                  **kwargs: Any) -> ChatResult:
        msg = next(self.messages)(messages)
        bound = {t["function"]["name"] for t in tools or []}
        unknown = [c["name"] for c in msg.tool_calls if c["name"] not in bound]
        assert not unknown, f"the script calls {unknown}, which are not bound"
        return ChatResult(generations=[ChatGeneration(message=msg)])


def call(name: str, args: dict, call_id: str) -> Turn:
    """A turn that calls one tool."""
    return lambda messages: AIMessage(content="", tool_calls=[
        {"name": name, "args": args, "id": call_id, "type": "tool_call"}])


def answer_from_tool_results(messages: list[BaseMessage]) -> AIMessage:
    """The last turn: an answer written from the ToolMessages the loop fed back (a real model
    would write its own)."""
    results = {m.name: json.loads(m.content) for m in messages if isinstance(m, ToolMessage)}
    passages = results["search_corpus"]
    gen = results["continue_text"]
    lines = ["From the corpus:"]
    lines += [f"  [para {p['para']}, score {p['score']}] {p['text'][:160]}..." for p in passages]
    lines.append(f"RETGEN's continuation of {gen['prompt']!r}: {gen['prompt']}{gen['text']}")
    lines.append("Sources of its first tokens:")
    lines += [f"  {s['token']!r} <- {s['kind']} {s['document']}@{s['offset']}: "
              f"\"{' '.join(s['snippet'].split())}\"" for s in gen["sources"]]
    return AIMessage(content="\n".join(lines))


def agent_model() -> BaseChatModel:
    """The agent's chat model: the only line to change for a real agent.

    PLUG YOUR MODEL IN HERE: any LangChain chat model that supports tool calling, e.g.
        from langchain_openai import ChatOpenAI;  return ChatOpenAI(model="gpt-4o-mini")
        from langchain_ollama import ChatOllama;  return ChatOllama(model="llama3.1")  # local
    Offline there is none, so this returns a scripted stand-in that makes the calls a model
    would make for QUESTION (its arguments are fixed; the tools' results are real).
    """
    return ScriptedToolCaller(messages=iter([
        call("search_corpus", {"query": "Little Rock Arsenal seized in 1861", "k": 2}, "call-1"),
        call("continue_text", {"prompt": "The arsenal was", "max_tokens": 20}, "call-2"),
        answer_from_tool_results,
    ]))


# --- the agent loop --------------------------------------------------------------------------

def run_agent(llm: BaseChatModel, tools: list[BaseTool], question: str,
              max_steps: int = 6) -> list[BaseMessage]:
    """Call the model; run every tool call it makes and feed the results back as
    ToolMessages; stop when it answers without calling a tool."""
    by_name = {t.name: t for t in tools}
    model = llm.bind_tools(tools)
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(question)]
    for step in range(1, max_steps + 1):
        ai = model.invoke(messages)
        messages.append(ai)
        if not ai.tool_calls:
            print(f"\nstep {step}: final answer\n{ai.content}")
            return messages
        for tc in ai.tool_calls:
            print(f"\nstep {step}: agent calls {tc['name']}({tc['args']})")
            if tc["name"] in by_name:
                out = by_name[tc["name"]].invoke(tc)  # a ToolCall in, a ToolMessage out
            else:  # a model may name a tool that does not exist: tell it so
                out = ToolMessage(f"no tool {tc['name']!r}; the tools are {sorted(by_name)}",
                                  tool_call_id=tc["id"], name=tc["name"], status="error")
            assert isinstance(out, ToolMessage) and out.tool_call_id == tc["id"]
            print(f"  -> ToolMessage({out.tool_call_id}, {out.status}): {out.content[:400]}")
            messages.append(out)
    raise RuntimeError(f"no final answer after {max_steps} steps")


def main() -> None:
    t0 = time.perf_counter()
    print("NOTE: no tool-calling chat model runs offline, so the agent's decisions come from a "
          "scripted stand-in\n(langchain-core's GenericFakeChatModel, see agent_model()); the "
          "tools, their results and the loop are real.\n")
    encoder = load_encoder("minilm", dtype="bfloat16")
    engine = sample_engine(encoder)
    paragraphs = sample_paragraphs()
    store = RetgenVectorStore.from_texts(paragraphs, RetgenEmbeddings(encoder=encoder),
                                         metadatas=[{"para": i} for i in range(len(paragraphs))])
    chat = ChatRetgen(engine=engine, seed=0)  # the default decoding (README, "Default decoding")
    tools = make_tools(RetgenRetriever(vectorstore=store), chat)
    print("tools bound to the agent (the schemas its model sees):")
    for t in tools:
        fn = convert_to_openai_tool(t)["function"]
        params = {n: p["type"] for n, p in fn["parameters"]["properties"].items()}
        print(f"  {fn['name']}({params}): {fn['description'].splitlines()[0]}")
    print(f"\nuser: {QUESTION}")

    llm = agent_model()
    messages = run_agent(llm, tools, QUESTION)
    tool_msgs = [m for m in messages if isinstance(m, ToolMessage)]
    if isinstance(llm, ScriptedToolCaller):  # what the stand-in's script must have done
        assert [m.name for m in tool_msgs] == ["search_corpus", "continue_text"]
        assert all(m.status == "success" and m.artifact for m in tool_msgs)
        answer, generated = messages[-1].content, json.loads(tool_msgs[1].content)
        assert generated["text"].strip() and generated["text"] in answer
        assert all(f"{s['document']}@{s['offset']}" in answer for s in generated["sources"])
    print(f"\n{len(messages)} messages, {len(tool_msgs)} tool results; "
          f"{time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
