"""The one domain error. The library raises it; only the CLI turns it into exit code 2."""


class BodycompError(Exception):
    """Bad input from a user: the message names the file, row or column and says what is wrong."""
