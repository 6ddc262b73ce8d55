"""The one exception type for a user's mistake: the CLI prints it as lines and exits 2."""


class UserError(Exception):
    """A problem the user can fix (recipe, data, paths). Each entry of `problems` is one line."""

    exit_code = 2

    def __init__(self, *problems: str):
        self.problems = [p for p in problems if p]
        super().__init__("\n".join(self.problems))
