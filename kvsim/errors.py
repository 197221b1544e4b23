"""Errors that the CLI turns into one-line messages and exit code 2."""


class KvsimError(ValueError):
    """Bad input: a message that names the field, the value and what is allowed.

    The CLI prints ``error: <message>`` on one line and exits with code 2. The
    message is kept on one line (newlines become spaces), and the error pickles
    with its field intact, so it crosses a process pool unchanged.
    """

    def __init__(self, field: str, message: str):
        self.field = str(field)
        self.message = " ".join(str(message).split("\n"))
        super().__init__(f"{self.field}: {self.message}" if self.field else self.message)

    def __reduce__(self):
        return (type(self), (self.field, self.message))
