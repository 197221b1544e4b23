"""Errors that the CLI turns into one-line messages and exit code 2."""


class KvsimError(Exception):
    """Bad input: a message that names the field, the value and what is allowed.

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)
