"""The one domain error. The library raises it; only the CLI turns it into exit code 2."""


class BodycompError(Exception):
    """Bad input from a user: the message names the file, row or column and says what is wrong."""


class BodycompWarning(UserWarning):
    """Input that is used, but not all of it or not as given; the CLI prints it as one `warning:` line."""
