"""Untrusted text as data: one rule for every string that comes from a file, a name or a path
(model and data paths, class folders, labels, layer and tensor names, custom-op codes) wherever
edgeq writes it.

- the terminal (`terminal`): control characters (C0, DEL, C1) and the Unicode line and bidi
  controls shown escaped (``\\x1b``, ``\\u202e``), so a name can neither drive the terminal (ESC
  sequences: window title, clear screen, cursor moves) nor break an error into forged lines;
  rich markup is never applied to it (edgeq.cli.render passes it as plain text);
- Markdown (`markdown`): the characters that start HTML, links, images, code spans, emphasis and
  table cells escaped, line breaks shown escaped: a name cannot forge a row or inject a tag;
- C/C++ (`c_comment_text`): a name that is not plain (letters, digits, ``._+-`` and space) is
  written as an escaped, quoted C string, so no line break, backslash (line continuation) or
  trigraph can end the comment it sits in;
- one-line names (`check_one_line`): labels and class names with a control character or line
  break are refused, because a file of one name per line would get a line per break.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls; the Unicode line/paragraph separators and the bidirectional
# embedding, override and isolate controls ("Trojan Source", CVE-2021-42574), which reorder
# what the reader sees; lone surrogates (a path's undecodable bytes, which cannot be encoded
# for output at all).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def has_control(text: str) -> bool:
    """Whether `text` holds a character `terminal` would escape."""
    return _CONTROL.search(text) is not None


def terminal(text: object) -> str:
    """`text` safe to print on a terminal, on one line: control characters escaped (``\\x1b``,
    ``\\n``). Printable text, backslashes included, is unchanged."""
    return _CONTROL.sub(_escaped, str(text))


# Backslash first so that the escapes added for the others are not escaped again.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|&#~])")
# '_' only opens or closes emphasis at a word boundary (CommonMark: an intraword '_' is
# neither left- nor right-flanking for '_'), so 'dense_1' stays readable.
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def markdown(text: object) -> str:
    """`text` as literal text inside a Markdown table cell, heading or list item: HTML,
    links, images, code spans, emphasis and cell separators escaped, and control characters
    (line breaks included) shown escaped, so it stays in its cell on its line."""
    out = _MD_SPECIAL.sub(r"\\\1", terminal(text))
    return _MD_UNDERSCORE.sub(r"\\_", out)


# Kept as written in a C/C++ comment; anything else makes the name a quoted, escaped string.
_PLAIN = re.compile(r"[A-Za-z0-9._+ -]*")


def c_comment_text(text: str) -> str:
    """`text` for a C/C++ ``//`` comment: unchanged when plain, else a quoted C string literal
    with every other byte of its UTF-8 written as a three-digit octal escape. Nothing in the
    result can end the comment: no line break, no backslash at a line end (a continuation),
    no ``??/`` trigraph, no ``*/``."""
    if _PLAIN.fullmatch(text):
        return text
    body = "".join(chr(b) if _PLAIN.fullmatch(chr(b)) else f"\\{b:03o}"
                   for b in text.encode("utf-8", errors="surrogateescape"))
    return f'"{body}"'


def check_one_line(text: str) -> str | None:
    """Why `text` cannot be one line of a one-name-per-line file, or None when it can: a
    control character (a line break, a tab, ESC) or a Unicode line separator."""
    m = _CONTROL.search(text)
    if m is None:
        return None
    return f"holds a control character ({_escaped(m)})"
