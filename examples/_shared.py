"""What the examples share (not an example): the sample-corpus model, its paragraphs and a
made-up note to add to a document memory."""
from __future__ import annotations

import os
from pathlib import Path

from retgen_engine import Encoder, RetgenEngine

DATA = Path(__file__).parent / "data" / "wikitext2_sample.tokens"


def sample_engine(encoder: Encoder) -> RetgenEngine:
    """The small sample-corpus model, built in memory (nothing left on disk); or the saved
    model at ``$RETGEN_EXAMPLE_MODEL`` (the tests build it once for all the examples)."""
    path = os.environ.get("RETGEN_EXAMPLE_MODEL")
    if path:
        return RetgenEngine.load(path, encoder=encoder)
    return RetgenEngine.sample(encoder)


def sample_paragraphs(n: int = 200) -> list[str]:
    """The first ``n`` long paragraphs of the sample corpus, as documents to retrieve from."""
    lines = [ln.strip() for ln in DATA.read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if len(ln.split()) > 30 and not ln.startswith("=")][:n]


#: A note made up for the examples (so that it is not in the model's corpus), in word-level
#: text like the corpus (punctuation separated by spaces).
NOTE_ID = "note-harbour-line"
NOTE = ("The Harbour Line railway was opened in 1893 between the docks and the cathedral , "
        "and its first locomotive was named the Grey Heron . The history of the Harbour Line "
        "railway ended in 1931 , when the Grey Heron was moved to a museum in the old station .")
NOTE_QUESTION = "The history of the Harbour Line railway"
