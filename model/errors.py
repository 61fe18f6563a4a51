"""Errors the model layer raises; the service maps them to HTTP in one place."""


class ArtifactError(Exception):
    """A model directory is missing, incomplete, tampered with or of an unknown kind."""


class InvalidTextError(ValueError):
    """A comment cannot be scored (empty, too long, not text)."""
