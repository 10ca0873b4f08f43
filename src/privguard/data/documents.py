"""Documents for document-level membership audits of language models.

A document is one record and is never split: a text file holds one document per line, a JSONL
file one per line in its ``text`` field, a CSV file one per row in ``--text-column``, and a
folder one per ``.txt`` file (sorted by name; such a document may span several lines). A
document longer than the model's context is windowed when it is scored and stays one record
(:meth:`privguard.models.text.hf.HFPredictor.token_stats`).

Bad input is a :class:`~privguard.errors.DataError` with one line that says what to do: a file
that is not UTF-8, an empty document, a members file identical to the non-members file, and
documents that are in both sets (counted).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from privguard.errors import DataError


def load_documents(path: str | Path, *, text_column: str | None = None) -> list[str]:
    """The documents of ``path`` (``.txt``, ``.jsonl``, ``.csv`` or a folder of ``.txt``).

    Example:
        >>> docs = load_documents("members.jsonl")
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.txt"))
        if not files:
            raise DataError(f"{p} holds no .txt files; give one document per .txt file")
        docs = [_read(f).strip("\n") for f in files]
        where = [f.name for f in files]
    elif p.is_file():
        text = _read(p)
        suffix = p.suffix.lower()
        if suffix == ".jsonl":
            docs, where = _jsonl(p, text)
        elif suffix == ".csv":
            docs, where = _csv(p, text, text_column)
        else:
            if text_column:
                raise DataError("--text-column applies to CSV files")
            docs = text.split("\n")
            if docs and docs[-1] == "":
                docs.pop()
            where = [f"line {i + 1}" for i in range(len(docs))]
    else:
        raise DataError(f"no documents at {p}: give a .txt, .jsonl or .csv file or a folder")
    empty = [w for w, d in zip(where, docs, strict=True) if not d.strip()]
    if empty:
        raise DataError(f"{p} has {len(empty)} empty document(s) (first: {empty[0]}); remove them")
    if not docs:
        raise DataError(f"{p} holds no documents")
    return docs


def _read(p: Path) -> str:
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{p} is not UTF-8 text (byte {e.start}); convert it, e.g. iconv -t UTF-8"
        ) from None


def _jsonl(p: Path, text: str) -> tuple[list[str], list[str]]:
    docs, where = [], []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{p} line {i + 1} is not a JSON object with a 'text' field") from None
        if not isinstance(doc, str):
            raise DataError(f"{p} line {i + 1}: 'text' is not a string")
        docs.append(doc)
        where.append(f"line {i + 1}")
    return docs, where


def _csv(p: Path, text: str, column: str | None) -> tuple[list[str], list[str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    names = list(rows[0]) if rows else []
    if column is None:
        raise DataError(f"{p} is a CSV file: name its text column with --text-column ({names})")
    if column not in names:
        raise DataError(f"{p} has no column {column!r}; columns: {', '.join(names)}")
    return [r[column] or "" for r in rows], [f"row {i + 2}" for i in range(len(rows))]


def check_split(members: list[str], nonmembers: list[str]) -> None:
    """Refuse a members set identical to the non-members set, or one that shares documents
    with it (a shared document is both a member and not; the count says how many)."""
    if _digest(members) == _digest(nonmembers):
        raise DataError("the members and non-members are the same documents; give held-out ones")
    shared = set(members) & set(nonmembers)
    if shared:
        raise DataError(
            f"{len(shared)} document(s) are both members and non-members; remove them from "
            "one of the two sets"
        )
    if len(members) < 2 or len(nonmembers) < 2:
        raise DataError("a document audit needs at least 2 members and 2 non-members")


def _digest(docs: list[str]) -> str:
    return hashlib.sha256("\x00".join(sorted(docs)).encode()).hexdigest()
