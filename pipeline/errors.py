"""The error tree. Every error says what is wrong in words a user can act on."""


class BlendError(Exception):
    """Base of every error peerblend raises on purpose."""


class InputError(BlendError):
    """A conversation, question or request is malformed."""


class ConfigError(BlendError):
    """A committee or settings file is malformed or names something unknown."""


class BackendError(BlendError):
    """A model backend could not load or run."""


class DatasetError(InputError):
    """A dataset file or one of its records cannot be read."""


class ServiceUnavailable(BlendError):
    """The broker, result backend or database cannot be reached."""


class TurnInProgress(InputError):
    """A live conversation's next question came while its previous turn still runs."""


class TurnTimeout(BlendError):
    """A turn did not finish within the time the caller would wait."""
