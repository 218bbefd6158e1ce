"""The exception types that the command line turns into a one-line message."""

import re


class UserError(Exception):
    """Bad input from the user: printed as one line, non-zero exit, no traceback.

    Raise it wherever input is checked (CLI options, files, folders), with a message that
    names the problem and, when there is one, the file.
    """

    exit_code = 2


FIELD_NAME = re.compile(r"`(\w+)`")


class ConfigError(UserError):
    """A config value refused, named by its field: ``"`steps` must be positive, got 0"``.

    Field names stand in backticks in the message. Printed as it is, the message names the
    fields (``steps must be ...``), which is what a Python caller passed; the CLI prints it with
    each field replaced by its flag (``naming``), which is what the user typed there.
    """

    def __init__(self, message: str) -> None:
        self.template = message
        super().__init__(self.naming({}))

    @property
    def fields(self) -> list[str]:
        return FIELD_NAME.findall(self.template)

    def naming(self, names: dict[str, str]) -> str:
        """The message with each field written as ``names`` calls it (a field not in it keeps its name)."""
        return FIELD_NAME.sub(lambda match: names.get(match.group(1), match.group(1)), self.template)




def one_line(text: str) -> str:
    """``text`` with every character that would break or hide a terminal line (newline, carriage
    return, other controls, Unicode line separators) written as its escape: a file name can hold
    any of them, and the message must stay one line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
