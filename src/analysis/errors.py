"""One exception hierarchy whose messages name the file, row, column and rule that failed."""

from __future__ import annotations


class AnalysisError(Exception):
    """Base of every error the kit raises on purpose; str() is a one-line reason for stderr."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        rule: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.row = row
        self.column = column
        self.rule = rule
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if self.row is not None:
            where.append(f"line {self.row}")
        if self.column is not None:
            where.append(f"column {self.column}")
        if self.rule is not None:
            where.append(f"rule {self.rule}")
        prefix = ", ".join(where)
        text = f"{prefix}: {self.message}" if prefix else self.message
        return " ".join(text.split())  # always one line


class InputFileError(AnalysisError):
    """A whole input file cannot be used (unreadable, wrong encoding, missing required column)."""


class MappingError(AnalysisError):
    """An import mapping is invalid (bad YAML, unknown canonical table or column)."""


class DefinitionsError(AnalysisError):
    """The governed definitions file is invalid (unknown stage, overlapping window, missing owner)."""


class RunError(AnalysisError):
    """A pack run failed (notebook error, missing data, lock held)."""


class AuditError(AnalysisError):
    """An audit could not be carried out (manifest or recorded input missing)."""


class EmailError(AnalysisError):
    """The pack could not be e-mailed (connection, TLS, authentication, recipient refused)."""
