"""Adapters that put RETGEN into LangChain and LlamaIndex.

``retgen_integrations.langchain`` needs ``langchain-core``; ``retgen_integrations.llama_index``
needs ``llama-index-core``. Both share :class:`retgen_engine.docstore.DocumentStore`.
"""
