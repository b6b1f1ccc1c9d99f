"""Reading the evaluator's input files: every failure is a ``ValueError`` that names the argument and the file.

Covers what a results file can do to a plain ``json.load``: a directory or a missing path, bytes that are not
UTF-8 (a UTF-8 byte-order mark is accepted), text that is not JSON, nesting deep enough to exhaust Python's
recursion limit, integer literals too long for Python to parse, and a key given twice in one object (``json``
would silently keep the last one, dropping e.g. a whole video's predictions).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, "os.PathLike[str]"]


def where(name: str, source: Any = None) -> str:
    """The subject of a message: the argument's name, and the file's path when it was read from one."""
    if isinstance(source, (str, os.PathLike)):
        return f"`{name}` ({str(source)!r})"
    return f"`{name}`"


def read_text(source: PathLike, name: str) -> str:
    """The file's text (UTF-8, optional byte-order mark), or a ``ValueError`` naming ``name`` and the file."""
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        raise ValueError(f"{where(name, source)} cannot be read ({error.strerror or error}).") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{where(name, source)} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
                         f"{error.start}).") from None


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return mapping


def read_json(source: PathLike, name: str) -> Any:
    """The parsed JSON document of a file, or a ``ValueError`` naming ``name``, the file and what is wrong."""
    text = read_text(source, name)
    subject = where(name, source)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as duplicate:
        raise ValueError(f"{subject} has the key {duplicate.key!r} twice in one object; a JSON reader would "
                         "silently keep only the last one.") from None
    except RecursionError:
        raise ValueError(f"{subject} nests lists or objects too deeply to read (past Python's recursion "
                         "limit); a gt.json or results file nests six levels at most.") from None
    except ValueError as error:  # json.JSONDecodeError, and int literals past Python's digit limit
        raise ValueError(f"{subject} is not valid JSON ({error}).") from None

