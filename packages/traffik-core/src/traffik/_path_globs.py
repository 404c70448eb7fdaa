"""Path globs compiled to regular expressions that match in time linear in the path's length.

A client picks the path, so the time a rule takes to match it must not grow faster than its
length. A glob read the obvious way (`**` as `.*`, `*` as `[^/]*`) does: the engine tries
every split of the path between two `**`, or between two `*` of one segment. The compiled form
here never tries a second split. Between two `**` (the gaps) lies a block of segments whose
wildcards stay within a segment, and the rest of the pattern after a block begins with a gap,
which takes any text: so the block's occurrence that ends first is as good as any, and it is
the only one looked for. That search is one atomic group, `(?=(?P<gN>...))(?P=gN)` (the
lookahead commits to its first match, and the back-reference consumes it), so the engine never
returns into it. Inside, a lazy loop over whole segments picks the segment the block starts
in, and each segment of the block is matched by scans that stop at the next `/`: a middle part
of a segment at its leftmost place (an atomic group of its own), the last part at the
segment's end. A segment of the path is so scanned at most once for each segment of the block,
and the work is at most the path's length times the pattern's.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

__all__ = ["glob_regex", "plain_path_regex"]

# A glob: `/**` as a whole segment run, `/*` as a whole segment, then `**` and `*` inside one.
_GLOB_TOKENS = re.compile(r"/\*\*(?=/|$)|/\*(?=/|$)|\*\*|\*")
_PATH_TOKENS = re.compile(r"\*\*|\*")
_REGEX_SYNTAX = frozenset(".^$+?{}[]\\|()")

_ONE = "[^/]"
"""One character of a segment (a whole-segment `*` has at least one)."""
_END = r"\n?\Z"
"""A glob's end: the path's, or before its final newline, as Starlette's route regexes end
(`$`): a client adding `%0A` reaches the same route, so it must meet the same rules."""

# Where a block ends: where it first can (a gap follows, which takes any text), before a `/`
# (a `/**` follows: it matches nothing, or a slash and any text, and the text after it begins
# with a slash), at the end. A final `/**` makes a fourth: before a `/` or at the end.
_EARLIEST, _SLASH, _LAST = None, "(?=/)", _END


class _Block(NamedTuple):
    """Segments (each its literal parts, regex text, with a `*` between two) matched as one."""

    segments: list[list[str]]
    searched: bool
    """Whether a gap comes before it (else it starts where the previous one ended)."""
    end: Optional[str]
    """What must follow it (a lookahead, or the end); None: it ends where it first can."""


class _Writer:
    """Builds blocks from tokens, and the regex from blocks; numbers the atomic groups."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []
        self.segments: list[list[str]] = [[""]]
        self.searched = False
        self.groups = 0

    def text(self, literal: str) -> None:
        for char in literal:
            if char == "/":
                self.segments.append([""])
            else:
                self.segments[-1][-1] += re.escape(char)

    def one(self) -> None:
        self.segments[-1][-1] += _ONE

    def star(self) -> None:
        self.segments[-1].append("")

    def close(self, end: Optional[str], *, gap: bool) -> None:
        self.blocks.append(_Block(self.segments, self.searched, end))
        self.segments, self.searched = [[""]], gap

    def atomic(self, body: str) -> str:
        self.groups += 1
        return f"(?=(?P<g{self.groups}>{body}))(?P=g{self.groups})"

    def segment(self, parts: list[str], end: Optional[str]) -> str:
        """A segment from where it starts up to `end`: the first part there, each middle
        part at its leftmost place, the last at the segment's end (at its leftmost place too
        when the block may end anywhere, where the leftmost place ends first)."""
        first, *rest = parts
        if end is None:
            return first + "".join(self.atomic(f"{_ONE}*?{part}") for part in rest if part)
        if not rest:
            return first + end
        *middle, last = rest
        scans = "".join(self.atomic(f"{_ONE}*?{part}") for part in middle if part)
        return f"{first}{scans}{_ONE}*{last}{end}"

    def block(self, block: _Block, last: bool) -> str:
        """A block's regex: an atomic group when it has a choice to make and more follows
        (the last one needs none: nothing after it can send the engine back into it)."""
        segments = block.segments
        if block.searched:  # it may start anywhere in the first segment it meets
            segments = [["", *segments[0]], *segments[1:]]
        *whole, final = segments
        body = "".join(self.segment(parts, "/") for parts in whole)
        body += self.segment(final, block.end)
        if block.searched:
            if not body:
                return ""
            body = f"(?:{_ONE}*/)*?{body}"  # the leftmost segment it starts in
        elif not any(len(parts) > 1 for parts in segments):
            return body  # literal text: nothing to choose
        return body if last else self.atomic(body)

    def regex(self, tail: str) -> str:
        *blocks, last = self.blocks
        return "".join(self.block(block, False) for block in blocks) + self.block(last, True) + tail


def glob_regex(pattern: str) -> str:
    """The regex of `rules.glob(pattern)`: `*` within a segment (at least one character as a
    whole segment), `**` across segments, `/**` as a whole segment also nothing, the rest
    literal; anchored at both ends."""
    writer, end = _Writer(), 0
    tokens = list(_GLOB_TOKENS.finditer(pattern))
    for index, token in enumerate(tokens):
        writer.text(pattern[end : token.start()])
        end, kind = token.end(), token.group()
        if kind == "/**":
            if pattern[end:] in ("", "\n"):  # (`$` matches before a final newline too)
                final = re.escape(pattern[end:]) + _END
                writer.close(f"(?=/|{final})", gap=False)  # at a segment's edge
                return writer.regex(f"(?:/.*)?{final}")  # nothing, or a slash and any text
            follower = tokens[index + 1] if index + 1 < len(tokens) else None
            if follower is None or follower.start() != end or follower.group() != "/**":
                writer.close(_SLASH, gap=True)  # (`/**/**` matches as `/**`: one is enough)
        elif kind == "/*":
            writer.text("/")
            writer.one()
            writer.star()
        elif kind == "**":
            writer.close(_EARLIEST, gap=True)
        else:
            writer.star()
    writer.text(pattern[end:])
    writer.close(_LAST, gap=False)
    return writer.regex("")


def plain_path_regex(path: str) -> Optional[str]:
    """The regex of a path string that is a glob in traffik 1.2's meaning (no regex syntax
    but `*` and `**`: `*` one segment's text, at least one character, `**` any text),
    matched from the start of the path; None for any other string, a regex of the user's."""
    if any(char in _REGEX_SYNTAX for char in path):
        return None
    writer, end = _Writer(), 0
    for token in _PATH_TOKENS.finditer(path):
        writer.text(path[end : token.start()])
        end = token.end()
        if token.group() == "**":
            writer.close(_EARLIEST, gap=True)
        else:
            writer.one()
            writer.star()
    writer.text(path[end:])
    writer.close(_EARLIEST, gap=False)
    return writer.regex("")
