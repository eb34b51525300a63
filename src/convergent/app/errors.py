"""The one exception of bad input to image search (a folder without images, a directory that
is not an index, an empty query, a model that did not make the index): the commands print its
message on one line, the server answers it as a JSON error."""


class AppError(ValueError):
    """Bad input to indexing, search or serving, with a message that says what was expected."""


class ModelMismatch(AppError):
    """The model asked to query (or extend) an index is not the one that made it."""
