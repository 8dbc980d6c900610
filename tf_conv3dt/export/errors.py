"""ExportError: an export that cannot go ahead, with the argument and value at fault."""


class ExportError(ValueError):
    """An export that cannot go ahead; the message is meant for the user.

    ``argument`` and ``value`` name the argument of ``export_model`` at fault
    (None when the problem is not one argument's), ``problem`` says what is
    wrong with it.
    """

    def __init__(self, problem, argument=None, value=None):
        self.problem, self.argument, self.value = problem, argument, value
        super().__init__(problem if argument is None else f"{argument}={value!r}: {problem}")
