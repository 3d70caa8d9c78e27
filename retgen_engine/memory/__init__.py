"""The document memory: passages retrieved by the long preceding context, whose n-gram
statistics are mixed into the language model (see :mod:`.memory`)."""
