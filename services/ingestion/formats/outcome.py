"""What a reader yields for each line of a file: ``Parsed``, ``ParseError`` or ``Skipped``.

Line numbers are 1-based with the header excluded (the proto's ``RecordVerdict.index``): the first data row of
an xlsx/CSV file is line 1, the first element of a JSON array is line 1, and 0 stands for the file itself
(unreadable file, bad header, a JSON header element).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO

from services.ingestion.records import Record
from services.ingestion.validation import ReasonCode, Violation

__all__ = [
    "MAX_RAW",
    "Outcome",
    "ParseError",
    "Parsed",
    "SkipReason",
    "Skipped",
    "Source",
    "Stored",
    "csv_rows",
    "file_error",
    "open_binary",
    "printable",
    "source_name",
]

Source = str | os.PathLike[str] | BinaryIO
"""A path, or a binary file object opened by the caller (left open by the readers)."""

MAX_RAW = 2000
"""Raw text kept with an error is cut to this many characters (a broken line can be megabytes)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A valid record read from ``line_no``. Master records discovered on a line share its number."""

    line_no: int
    record: Record


@dataclass(frozen=True, slots=True)
class ParseError:
    """A rejected line. ``field_path``/``reason_code``/``description`` are the first of ``violations``."""

    line_no: int
    field_path: str
    reason_code: ReasonCode
    description: str
    raw: str
    violations: tuple[Violation, ...] = ()

    @classmethod
    def of(cls, line_no: int, violations: list[Violation] | tuple[Violation, ...], raw: str) -> ParseError:
        """The error for a line with at least one violation."""
        first = violations[0]
        return cls(
            line_no, first.field_path, first.reason_code, first.description, printable(raw), tuple(violations)
        )


class SkipReason(StrEnum):
    """Why a line produced no record although nothing is wrong with it."""

    HEADER = "HEADER"
    BLANK = "BLANK"
    DUPLICATE_LINE = "DUPLICATE_LINE"
    NOT_CLOSING_BULLETIN = "NOT_CLOSING_BULLETIN"
    SUPERSEDED_CLOSING = "SUPERSEDED_CLOSING"
    PARTIAL_DAY = "PARTIAL_DAY"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A line deliberately not turned into a record (a header, an intraday quote, a partial edge day)."""

    line_no: int
    reason: SkipReason
    description: str


@dataclass(frozen=True, slots=True)
class Stored:
    """A valid record read from ``line_no`` in the form it is stored in (its kind, natural key, content
    hash and serialized wire form): what a reader asked for ``stored_form`` yields instead of ``Parsed``,
    for a caller that only stores records and would otherwise build each one just to serialize it."""

    line_no: int
    kind: str
    record_key: str
    content_hash: str
    payload: bytes


Outcome = Parsed | ParseError | Skipped | Stored


def printable(raw: str) -> str:
    """``raw`` cut to ``MAX_RAW``, safe to store as text: undecodable bytes and NUL escaped."""
    cut = raw[:MAX_RAW]
    try:
        # Bytes a reader decoded with surrogateescape come back as themselves, then shown as \xNN.
        data = cut.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates (a JSON "\ud800" escape)
        data = cut.encode("utf-8", "backslashreplace")
    return data.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def file_error(
    field: str, reason: ReasonCode, description: str, line_no: int = 0, raw: str = ""
) -> ParseError:
    """An error about the whole file (or from ``line_no`` on): unreadable, bad header, wrong structure."""
    return ParseError.of(line_no, [Violation(field, reason, description)], raw)


def source_name(source: Source) -> str:
    """The file name of a path source, or the ``name`` of a file object when it has one."""
    if isinstance(source, str | os.PathLike):
        return os.path.basename(os.fspath(source))
    name = getattr(source, "name", "")
    return os.path.basename(name) if isinstance(name, str) else ""


@contextmanager
def open_binary(source: Source) -> Iterator[BinaryIO]:
    """Open a path for binary reading (closed on exit), or pass a caller's file object through (left open)."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            yield handle
    else:
        yield source


def csv_rows(
    reader: Iterator[list[str]], delimiter: str, *, with_raw: bool = True
) -> Iterator[tuple[int, list[str], str] | Outcome]:
    """Number a CSV reader's rows (1-based, header already read): ``(line_no, values, raw)`` for rows with
    content; an unreadable row becomes a ParseError and a blank one a Skipped, and reading goes on.
    Without ``with_raw``, raw is "" (for a caller that rebuilds it only for the lines it rejects)."""
    line_no = 0
    while True:
        line_no += 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield file_error("line", ReasonCode.INVALID_FORMAT, f"unreadable CSV: {exc}", line_no=line_no)
            continue
        # Every field blank exactly when their concatenation is (one strip instead of one per field).
        if not "".join(values).strip():
            yield Skipped(line_no, SkipReason.BLANK, "empty line")
            continue
        yield line_no, values, delimiter.join(values)[:MAX_RAW] if with_raw else ""
