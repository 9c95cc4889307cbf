"""The one exception type for errors a user can cause; the CLI prints it as one line."""


class ImxlateError(Exception):
    """A problem with the user's input, files or options, with a message that says what to do."""
