"""Robust reading of delimited text files into string columns, every line accounted for.

Fast path: pyarrow's multithreaded CSV reader, all columns as strings. It is trusted only
when the file has no blank lines and yields exactly one row per line; otherwise (ragged rows,
broken quoting, non-UTF-8 bytes) a line-level pass in Python re-reads the file and quarantines
each bad line with its rule. A file whose only damage is a cut last line (an interrupted
export) keeps the fast path for everything before that line.

`source_row` is the 0-based index of the line after the header, so the 1-based line number
of a row is `source_row + 1 + header_lines`.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
BINARY_SNIFF_BYTES = 8192
# Share of control bytes in the first block above which a file is binary, not text.
MAX_CONTROL_SHARE = 0.05
TEXT_CONTROL_BYTES = frozenset(b"\t\n\r\f")
CANDIDATE_DELIMITERS = (",", ";", "\t", "|")
NEWLINE_SCAN_CHUNK_BYTES = 64 << 20
DEL = 0x7F


@dataclass
class TextTable:
    """String columns of the good lines of one file, plus the lines it quarantined.

    Attributes:
        path: the file read.
        data: the file's bytes (decompressed), kept to quote raw lines in quarantine.
        header_lines: 1 when the first line is a header, else 0.
        table: good rows, every column `string`.
        source_row: (rows,) int64 line index after the header of each table row.
        quarantine: records `{source_row, raw, rule, detail}` of lines that did not parse.
        rows_in: data lines seen (blank lines excluded).
    """

    path: Path
    data: bytes
    header_lines: int
    table: pa.Table
    source_row: np.ndarray
    quarantine: list[dict] = field(default_factory=list)
    rows_in: int = 0
    _line_starts: np.ndarray | None = None

    def raw_lines(self, source_rows: np.ndarray) -> list[str]:
        """The original text of the given data lines (for quarantine records)."""
        if self._line_starts is None:
            self._line_starts = _line_starts(self.data)
        starts = self._line_starts
        out = []
        for row in np.asarray(source_rows, dtype=np.int64):
            index = int(row) + self.header_lines
            end = starts[index + 1] - 1 if index + 1 < len(starts) else len(self.data)
            out.append(_as_text(self.data[starts[index] : end].rstrip(b"\r")))
        return out


def _line_starts(data: bytes) -> np.ndarray:
    """Byte offset of the start of every line, scanned in chunks to bound memory."""
    found = [np.zeros(1, dtype=np.int64)]
    view = np.frombuffer(data, dtype=np.uint8)
    for begin in range(0, len(data), NEWLINE_SCAN_CHUNK_BYTES):
        chunk = view[begin : begin + NEWLINE_SCAN_CHUNK_BYTES]
        found.append(np.flatnonzero(chunk == ord("\n")).astype(np.int64) + begin + 1)
    return np.concatenate(found)


def has_control_bytes(data: bytes) -> bool:
    """Whether any byte is a control character other than tab, CR, LF (chunked, vectorised)."""
    view = np.frombuffer(data, dtype=np.uint8)
    # Bytes below 0x20 that are not tab/LF/CR: counting beats a lookup table by ~10x.
    below_space = 0
    for begin in range(0, len(data), NEWLINE_SCAN_CHUNK_BYTES):
        chunk = view[begin : begin + NEWLINE_SCAN_CHUNK_BYTES]
        below_space += int(np.count_nonzero(chunk < ord(" ")))
        if np.count_nonzero(chunk == DEL):
            return True
    return below_space != sum(data.count(byte) for byte in (b"\t", b"\n", b"\r"))


def _as_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def line_of(data: bytes, offset: int) -> int:
    """1-based line number of a byte offset."""
    return data.count(b"\n", 0, offset) + 1


def read_text_bytes(path: Path) -> bytes:
    """The bytes of a text file (gzip is opened transparently), or a one-line `InputError`.

    Rejects missing, empty, compressed-but-corrupt, Parquet, UTF-16 and binary files.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read file: {exc.strerror} (rule unreadable_file)"
        ) from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: corrupt gzip file: {exc} (rule unreadable_file)") from None
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]  # spreadsheet exports often start with one
    if not data.strip():
        raise InputError(f"{path}: line 1: file is empty (rule empty_file)")
    if data[:4] == PARQUET_MAGIC:
        raise InputError(
            f"{path}: line 1: this is a Parquet file, not text (rule binary_file); "
            "use data.source: parquet"
        )
    if data[:2] in UTF16_BOMS:
        raise InputError(
            f"{path}: line 1: UTF-16 text is not supported, save as UTF-8 (rule not_utf8)"
        )
    head = data[:BINARY_SNIFF_BYTES]
    control = sum(1 for byte in head if byte < 0x20 and byte not in TEXT_CONTROL_BYTES)
    if b"\x00" in head or control > MAX_CONTROL_SHARE * len(head):
        first = next(
            i for i, byte in enumerate(head) if byte < 0x20 and byte not in TEXT_CONTROL_BYTES
        )
        raise InputError(
            f"{path}: line {line_of(data, first)}: binary content (byte 0x{head[first]:02x}), "
            "not a delimited text file (rule binary_file)"
        )
    return data


def sniff_delimiter(header: str) -> str:
    """The candidate delimiter occurring most often in the header line (',' on a tie)."""
    counts = {delim: header.count(delim) for delim in CANDIDATE_DELIMITERS}
    best = max(counts, key=lambda delim: counts[delim])
    return best if counts[best] > 0 else ","


def first_line(data: bytes) -> bytes:
    end = data.find(b"\n")
    return (data if end < 0 else data[:end]).rstrip(b"\r")


def read_header(path: Path, data: bytes, delimiter: str | None) -> tuple[list[str], str]:
    """Column names and delimiter from the first line; `InputError` if it is not a header."""
    raw = first_line(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: line 1: header is not UTF-8 text (rule not_utf8)") from None
    delimiter = delimiter or sniff_delimiter(text)
    try:
        names = [
            name.strip() for name in next(csv.reader([text], delimiter=delimiter, strict=True))
        ]
    except csv.Error as exc:
        raise InputError(
            f"{path}: line 1: header has broken quoting: {exc} (rule bad_quoting)"
        ) from None
    if any(not name for name in names) or len(set(names)) != len(names):
        raise InputError(
            f"{path}: line 1: header needs unique, non-empty column names, got {names} "
            "(rule bad_header)"
        )
    return names, delimiter


def read_delimited(
    path: Path, *, names: list[str] | None = None, delimiter: str | None = None
) -> TextTable:
    """Read a delimited file into string columns; bad lines go to `quarantine`.

    Args:
        path: the file.
        names: column names of a header-less file; None reads them from the first line.
        delimiter: field separator; None sniffs it from the header (',' without one).
    """
    data = read_text_bytes(path)
    header_lines = 0
    if names is None:
        names, delimiter = read_header(path, data, delimiter)
        header_lines = 1
    delimiter = delimiter or ","
    body_start = len(first_line(data)) + 1 if header_lines else 0
    if not data[body_start:].strip():
        raise InputError(f"{path}: line 2: header only, no data rows (rule no_data_rows)")
    n_lines = data.count(b"\n", body_start) + (0 if data.endswith(b"\n") else 1)
    table = _parse_fast(data, body_start, names, delimiter, header_lines, n_lines)
    if table is not None:
        rows = np.arange(table.num_rows, dtype=np.int64)
        return TextTable(path, data, header_lines, table, rows, [], table.num_rows)
    # A cut last line: keep the fast path for the lines before it.
    cut = data.rfind(b"\n") + 1
    if not data.endswith(b"\n") and cut > body_start:
        head = _parse_fast(data[:cut], body_start, names, delimiter, header_lines, n_lines - 1)
        if head is not None:
            tail = _parse_lines(data[cut:], 0, names, delimiter, first_index=n_lines - 1)
            table = pa.concat_tables([head, tail.table])
            rows = np.concatenate([np.arange(head.num_rows, dtype=np.int64), tail.source_row])
            return TextTable(
                path, data, header_lines, table, rows, tail.quarantine, head.num_rows + tail.rows_in
            )
    slow = _parse_lines(data, header_lines, names, delimiter)
    return TextTable(
        path, data, header_lines, slow.table, slow.source_row, slow.quarantine, slow.rows_in
    )


def _parse_fast(
    data: bytes, body_start: int, names: list[str], delimiter: str, header_lines: int, n_lines: int
) -> pa.Table | None:
    """pyarrow parse; None when the result cannot be trusted to be one row per line."""
    body_head = data[body_start : body_start + 2]
    if b"\n\n" in data or b"\n\r\n" in data or body_head.startswith((b"\n", b"\r\n")):
        return None  # blank lines: pyarrow would turn them into rows of empty strings
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=header_lines),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # wrong field count, invalid UTF-8, ...: find the bad lines one by one
    return table if table.num_rows == n_lines else None


@dataclass
class _Lines:
    table: pa.Table
    source_row: np.ndarray
    quarantine: list[dict]
    rows_in: int


def _parse_lines(
    data: bytes, header_lines: int, names: list[str], delimiter: str, first_index: int = 0
) -> _Lines:
    """Line-by-line parse with Python's csv module: the slow path that names every bad line."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    good: list[list[str]] = []
    good_rows: list[int] = []
    quarantine: list[dict] = []
    rows_in = 0

    def reject(index: int, raw: str, rule: str, detail: str) -> None:
        quarantine.append({"source_row": index, "raw": raw, "rule": rule, "detail": detail})

    for offset, line in enumerate(lines[header_lines:]):
        index = first_index + offset
        line = line.rstrip(b"\r")
        if not line.strip():
            continue  # blank lines carry no data and are not counted as rows
        rows_in += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = line[exc.start]
            reject(index, _as_text(line), "not_utf8", f"byte 0x{byte:02x} at char {exc.start + 1}")
            continue
        try:
            fields = next(csv.reader([text], delimiter=delimiter, strict=True))
        except csv.Error as exc:
            reject(index, text, "bad_quoting", str(exc))
            continue
        if len(fields) != len(names):
            detail = f"{len(fields)} fields, expected {len(names)} ({delimiter!r}-separated)"
            reject(index, text, "wrong_field_count", detail)
            continue
        good.append(fields)
        good_rows.append(index)
    columns = list(zip(*good, strict=True)) if good else [() for _ in names]
    table = pa.table(
        {name: pa.array(column, pa.string()) for name, column in zip(names, columns, strict=True)}
    )
    return _Lines(table, np.asarray(good_rows, dtype=np.int64), quarantine, rows_in)
