"""Parsing ``strace -f -y -X raw`` logs into one record per completed system call.

We ask strace (see ``workloads.strace.STRACE_ARGS``) for the shape that needs the least
guessing: ``-f`` prefixes every line with the thread id; ``-y`` prints every file descriptor
with the path the kernel has for it (``3</work/a>``, and ``-100</cwd>`` for ``AT_FDCWD``),
so no path has to be rebuilt from a tracked working directory; ``-X raw`` prints flags as
numbers (``0x241``) and modes in octal (``0644``), which parse without a table of names.

A call interrupted by another thread's output is split by strace into
``PID name(args <unfinished ...>`` and later ``PID <... name resumed>rest) = ret``; the two
halves are joined here.  Signal lines (``--- SIG...``) and exit notices (``+++ ...``) are
skipped.  Strings are C-escaped by strace (``\\n``, ``\\x3e``, ``\\123``); paths are decoded
back to ``str`` (non-UTF-8 bytes as surrogates).  A line that is none of these shapes is
``BadInput`` naming the log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from simulator.errors import BadInput

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?\d+|\?|0x[0-9a-f]+)(?:<(.*?)>(?:\(deleted\))?)?(?:\s+(E[A-Z0-9]+)\b.*)?(?:\s+\(.*\))?\s*$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>\s?(.*)$")
_UNFINISHED = " <unfinished ...>"
_ESCAPES = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "a": 7, "b": 8, "\\": 92, '"': 34, "'": 39}


@dataclass(frozen=True, slots=True)
class Call:
    """One finished system call: who, what, with which raw arguments, and its outcome."""

    pid: int
    name: str
    args: tuple[str, ...]
    ret: int | None  # None for '?' (exit, execve of a vanished process)
    errno: str | None  # 'ENOENT' when the call failed
    ret_path: str | None  # -y path of a returned descriptor
    line: int

    @property
    def failed(self) -> bool:
        return self.errno is not None


def split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments, respecting quotes, brackets and ``<paths>``."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c == "<" and cur and (cur[-1][-1:].isdigit() or cur[-1][-1:] == ""):
            j = text.find(">", i)
            j = n - 1 if j < 0 else j
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
        if c == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if cur or out:
        out.append("".join(cur).strip())
    return out


def unescape(body: str) -> str:
    """strace's C escapes back to text (bytes that are not UTF-8 become surrogates)."""
    if "\\" not in body:
        return body
    raw = bytearray()
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != "\\" or i + 1 >= n:
            raw += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        e = body[i + 1]
        if e == "x":
            raw.append(int(body[i + 2:i + 4], 16))
            i += 4
        elif e in "01234567":
            j = i + 1
            while j < n and j < i + 4 and body[j] in "01234567":
                j += 1
            raw.append(int(body[i + 1:j], 8) & 0xFF)
            i = j
        else:
            raw.append(_ESCAPES.get(e, ord(e)))
            i += 2
    return raw.decode("utf-8", "surrogateescape")


def str_arg(arg: str) -> str | None:
    """The text of a quoted string argument (None if it is not one, e.g. NULL)."""
    if len(arg) >= 2 and arg[0] == '"':
        end = arg.rfind('"')
        return unescape(arg[1:end])
    return None


def int_arg(arg: str) -> int:
    """``0x241`` hex, ``0644`` octal (strace -X raw prints modes so), ``-100`` decimal;
    ``0x1200000|17`` ORs its parts."""
    total = 0
    for part in arg.split("|"):
        part = part.strip()
        if not part:
            continue  # statx prints AT_STATX_SYNC_AS_STAT (0) as nothing: '|0x1000'
        if part.startswith(("0x", "-0x")):
            total |= int(part, 16)
        elif len(part) > 1 and part.startswith("0"):
            total |= int(part, 8)
        else:
            total |= int(part)
    return total


def fd_arg(arg: str) -> tuple[int, str | None]:
    """``3</a/b>`` -> ``(3, '/a/b')``; ``-100</cwd>`` -> ``(-100, '/cwd')``."""
    lt = arg.find("<")
    if lt < 0:
        return int_arg(arg), None
    gt = arg.rfind(">")
    path = unescape(arg[lt + 1:gt])
    if arg[gt + 1:].startswith("(deleted)"):  # strace 6 writes the kernel's mark after the '>'
        path += " (deleted)"
    return int_arg(arg[:lt]), path


def _parse_call(pid: int, text: str, lineno: int, source: str) -> Call | None:
    paren = text.find("(")
    name = text[:paren]
    if paren <= 0 or not name.replace("_", "").isalnum():
        raise BadInput(f"{source}: line {lineno}: not an strace -f line: {text[:80]!r}")
    m = None
    for m in _RESULT.finditer(text):
        pass  # the last '= ret' wins: arguments may contain ') = ' inside strings
    if m is None:
        raise BadInput(f"{source}: line {lineno}: no result in {text[:80]!r}")
    args = split_args(text[paren + 1:m.start()])
    ret_text, ret_path, errno = m.group(1), m.group(2), m.group(3)
    ret = None if ret_text == "?" else int_arg(ret_text)
    if ret_path is not None:
        ret_path = unescape(ret_path)
    return Call(pid, name, tuple(args), ret, errno, ret_path, lineno)


def parse_log(lines: Iterable[str], source: str = "strace log") -> Iterator[Call]:
    """Every completed call of an ``strace -f -y -X raw`` log, in completion order."""
    pending: dict[int, tuple[str, int]] = {}
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise BadInput(f"{source}: line {lineno}: not an strace -f line (no pid): {line[:80]!r}")
        pid, text = int(m.group(1)), m.group(2)
        if text.startswith(("---", "+++")):
            continue
        if text.endswith(_UNFINISHED):
            pending[pid] = (text[:-len(_UNFINISHED)], lineno)
            continue
        resumed = _RESUMED.match(text)
        if resumed:
            head, first = pending.pop(pid, (None, lineno))
            if head is None:
                continue  # strace attached mid-call: the start is not in the log
            sep = "" if head.endswith(("(", " ")) else ", " if not resumed.group(2).startswith((",", ")")) else ""
            text = head + sep + resumed.group(2)
            if text.endswith(_UNFINISHED):  # resumed then interrupted again (rare)
                pending[pid] = (text[:-len(_UNFINISHED)], first)
                continue
        call = _parse_call(pid, text, lineno, source)
        if call is not None:
            yield call
