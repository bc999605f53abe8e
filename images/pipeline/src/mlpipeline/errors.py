"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class PipelineError(Exception):
    """Bad input or an unusable state, explained in one human-readable line."""
