"""edgeq.outputs.text: the one rule for untrusted text (terminal, Markdown, C comments, one
name per line)."""

from __future__ import annotations

import re

import pytest

from edgeq.outputs import text


@pytest.mark.parametrize("raw, shown", [
    ("plain name_1.tflite", "plain name_1.tflite"),
    ("a\x1b]0;title\x07b", "a\\x1b]0;title\\x07b"),
    ("x\ny\r\tz", "x\\ny\\r\\tz"),
    ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
    ("bidi\u202eevil\u2066", "bidi\\u202eevil\\u2066"),
    ("line\u2028sep", "line\\u2028sep"),
    ("undecodable\udcff", "undecodable\\udcff"),
    ("C:\\path\\[/]", "C:\\path\\[/]"),  # printable text, backslashes and brackets unchanged
])
def test_terminal(raw, shown):
    assert text.terminal(raw) == shown
    assert text.terminal(shown) == shown  # idempotent: escaping twice shows the same
    assert not re.search("[\x00-\x1f\x7f-\x9f]", text.terminal(raw))


def test_markdown_cannot_forge_a_row_or_a_tag():
    cell = text.markdown("<img src=x onerror=alert(1)>| top-1 | 99% (FORGED) |\n| x |")
    assert "\n" not in cell
    assert not re.search(r"(?<!\\)[<>|]", cell)
    assert text.markdown("dense_1/conv_2d") == "dense_1/conv_2d"  # intraword '_' kept
    assert text.markdown("_a_ *b* `c` [d](e) &amp; \\") == \
        "\\_a\\_ \\*b\\* \\`c\\` \\[d\\](e) \\&amp; \\\\"


def _c_literal_bytes(literal: str) -> bytes:
    assert literal.startswith('"') and literal.endswith('"')
    body, out, i = literal[1:-1], bytearray(), 0
    while i < len(body):
        if body[i] == "\\":
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(ord(body[i]))
            i += 1
    return bytes(out)


@pytest.mark.parametrize("name", ["m\nint x;\n", "m\r", "*/", '"', "m\\", "m??/", "é",
                                  "".join(chr(c) for c in range(1, 32))])
def test_c_comment_text_is_an_escaped_literal(name):
    shown = text.c_comment_text(name)
    assert re.fullmatch(r'"[A-Za-z0-9._+ \-\\]*"', shown)
    assert "??" not in shown and "*/" not in shown
    assert _c_literal_bytes(shown) == name.encode()


def test_c_comment_text_keeps_a_plain_name():
    assert text.c_comment_text("hello_world_int8.tflite") == "hello_world_int8.tflite"


def test_check_one_line():
    assert text.check_one_line("digit 7") is None
    assert text.check_one_line("c3\nINJECTED") == "holds a control character (\\n)"
    assert "\\u2028" in text.check_one_line("a\u2028b")
