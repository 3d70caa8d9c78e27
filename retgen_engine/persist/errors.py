"""The one exception type of every load: a file that is missing, damaged or incompatible."""


class ModelFormatError(ValueError):
    """A model or store directory is missing, incomplete, corrupt or incompatible; the message
    names the file and what is wrong."""


class ModelNotFoundError(ModelFormatError, FileNotFoundError):
    """There is no model or store at the path given (also a ``FileNotFoundError``)."""
