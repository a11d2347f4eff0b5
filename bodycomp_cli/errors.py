"""The one domain error. The library raises it; only the CLI turns it into exit code 2."""


class BodycompError(Exception):
    """Bad input from a user: the message names the file, row or column and says what is wrong."""


def reason(error: BaseException, limit: int = 160) -> str:
    """A library exception as a short reason for a BodycompError line: its first line, cut at `limit` characters.

    Readers of damaged files wrap whatever numpy, pydicom or torch raised; some of those messages run to several
    lines or echo kilobytes of garbled header.
    """
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BodycompWarning(UserWarning):
    """Input that is used, but not all of it or not as given; the CLI prints it as one `warning:` line."""
