"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """Bad input from the user: printed as one line, non-zero exit, no traceback.

    Raise it wherever input is checked (CLI options, files, folders), with a message that
    names the problem and, when there is one, the file.
    """

    exit_code = 2
