"""One exception type for everything a user can get wrong.

Messages follow one rule: what was expected, what came, and the fix.
"""


class BoLIDError(ValueError):
    """A user-facing error: bad input, a wrong file, a model of the wrong kind."""
