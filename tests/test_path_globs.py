"""Path globs match in time linear in the path's length, and match what they matched before.

A client picks the path. `glob("/a/**/b/**/c")` read as `/a(?:/.*)?/b(?:/.*)?/c` took time
growing with the square of the path's length (the engine tried every split between the two
`**`), and `glob("/f/*.tar.*")` too (every split between the two `*`). The compiled form now
has no construct the engine can return into once it matched: checked here on its text, for
any glob, and its answers are checked against the former compiled form (fuzzed with
hypothesis: bounded examples, derandomized).
"""

from __future__ import annotations

import re
from typing import Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traffik.rules import compile_path, glob

FUZZ = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

# -- the former compiled forms, the reference ----------------------------------------------

_TOKENS = re.compile(r"/\*\*(?=/|$)|/\*(?=/|$)|\*\*|\*")
_REGEX = {"/**": "(?:/.*)?", "/*": "/[^/]+", "**": ".*", "*": "[^/]*"}


def former_glob(pattern: str) -> re.Pattern[str]:
    regex, end = [], 0
    for token in _TOKENS.finditer(pattern):
        regex.append(re.escape(pattern[end : token.start()]))
        regex.append(_REGEX[token.group()])
        end = token.end()
    regex.append(re.escape(pattern[end:]))
    return re.compile("".join(regex) + r"\n?\Z", re.DOTALL)


def former_path(path: str) -> re.Pattern[str]:
    text = path.replace("**", "\0").replace("*", "[^/]+").replace("\0", ".*")
    return re.compile(text, re.DOTALL)


# -- the shape of a compiled form ----------------------------------------------------------

_CHAR = r"(?:\\.|[^\\()\[\]*+?{}|.^$]|\[\^/\])"
"""A literal character (escaped or plain) or `[^/]`: no choice in it."""
_END = r"(?:\\\n)?\\n\?\\Z"
_LOOK = rf"(?:\(\?=/\)|\(\?=/\|{_END}\)|{_END})"
"""A slash or the end looked for (the end may follow a final newline)."""
_SEARCH = rf"\(\?=\(\?P<g\d+>\[\^/\]\*\?{_CHAR}*\)\)\(\?P=g\d+\)"
"""A part of a segment at its leftmost place, found by a scan that stops at the next slash;
atomic."""
_SCAN = rf"\[\^/\]\*{_CHAR}*(?:/|{_LOOK})"
"""The last part of a segment, at the segment's end: a scan that stops at the next slash."""
_BODY = rf"(?:\(\?:\[\^/\]\*/\)\*\?)?(?:{_CHAR}|{_SEARCH}|{_SCAN}|{_LOOK})*"
"""A block: at most one loop over whole segments (which one it starts in), at its start."""
_GROUP = rf"\(\?=\(\?P<g\d+>{_BODY}\)\)\(\?P=g\d+\)"
_SHAPE = re.compile(rf"(?:{_CHAR}|{_GROUP}|{_LOOK})*{_BODY}(?:\(\?:/\.\*\)\?{_END})?", re.DOTALL)
"""Blocks, each an atomic group but the last (nothing after it can return into it), then
what a final `/**` matches. No alternation, no repetition of anything but `[^/]` (a scan that
stops at the next slash) and of whole segments (once per block)."""


def never_backtracks(regex: str) -> bool:
    return _SHAPE.fullmatch(regex) is not None


# -- hypothesis ----------------------------------------------------------------------------

globs = st.lists(
    st.sampled_from(["a", "b", "ab", ".", "/", "*", "**", "/*", "/**", "\n"]), min_size=1
).map("".join)
plain_paths = st.lists(st.sampled_from(["a", "b", "ab", "/", "*", "**", "-"]), min_size=1).map(
    "".join
)
texts = st.text(alphabet="ab./\n", max_size=24)


@st.composite
def paths_for(draw: st.DrawFn, pattern: str) -> str:
    """A path made from `pattern`: each `*` replaced by some text (with slashes or not),
    sometimes a final newline; or any text."""
    if draw(st.booleans()):
        return draw(texts)
    parts = pattern.split("*")
    fillers = [draw(st.text(alphabet="ab/\n", max_size=4)) for _ in parts[1:]]
    path = parts[0] + "".join(filler + part for filler, part in zip(fillers, parts[1:]))
    return path + draw(st.sampled_from(["", "", "\n", "/", "/a"]))


@FUZZ
@given(st.data(), globs)
def test_a_glob_matches_what_it_matched_before(data: st.DataObject, pattern: str) -> None:
    path = data.draw(paths_for(pattern))
    assert bool(glob(pattern).match(path)) is bool(former_glob(pattern).match(path))


@FUZZ
@given(st.data(), plain_paths)
def test_a_path_string_matches_what_it_matched_before(data: st.DataObject, pattern: str) -> None:
    path = data.draw(paths_for(pattern))
    assert bool(compile_path(pattern).match(path)) is bool(former_path(pattern).match(path))


@FUZZ
@given(globs)
def test_a_compiled_glob_never_backtracks(pattern: str) -> None:
    assert never_backtracks(glob(pattern).pattern), glob(pattern).pattern


@FUZZ
@given(plain_paths)
def test_a_compiled_path_string_never_backtracks(pattern: str) -> None:
    assert never_backtracks(compile_path(pattern).pattern), compile_path(pattern).pattern


def test_the_former_forms_did_backtrack() -> None:
    # The check above can fail: it refuses the forms that took quadratic time.
    for pattern in ("/a/**/b/**/c", "/f/*.tar.*"):
        assert not never_backtracks(former_glob(pattern).pattern)
        assert never_backtracks(glob(pattern).pattern)
    assert not never_backtracks(former_path("/a/**/b/**/c").pattern)


def test_long_hostile_paths_match_as_before() -> None:
    # The paths that took the former forms seconds: a sure answer, the same answer.
    cases: list[tuple[str, str, Optional[bool]]] = [
        ("/a/**/b/**/c", "/a" + "/b" * 4000, False),
        ("/a/**/b/**/c", "/a" + "/b" * 4000 + "/c", True),
        ("/f/*.tar.*", "/f/" + ".tar." * 4000 + "/", False),
        ("/f/*.tar.*", "/f/x" + ".tar." * 4000, True),
        ("**a*b*c**d", "ab" * 4000, False),
        ("/**/x/**/y/**/z", "/x/y" * 4000, False),
    ]
    for pattern, path, matches in cases:
        assert bool(glob(pattern).match(path)) is matches


def test_a_path_string_with_regex_syntax_is_compiled_as_given() -> None:
    # A user's regular expression cannot be rewritten: `.` and `\d` keep their meaning.
    for path in ("/v1.0/**", r"/users/\d+/**/x/**", "/a/(b|c)/*"):
        assert compile_path(path).pattern == former_path(path).pattern
