"""Concepts with exact ground truth taken from the text alone, never from a model.

Each concept marks characters of a document; a token is positive for a concept when any of its
characters (its tokenizer offsets) is marked. Four sources:

- `python`: from the standard library's `tokenize` (and `ast` for docstrings) on the document as
  Python source: string literals, docstrings, comments, f-strings, numbers, each keyword, builtin
  names, bracket depth, indentation level, a physical line's first token, decorator, import and
  def/class header lines. A document that stops tokenizing keeps the marks made up to the error.
- `text`: regular expressions that mean the same in any text (digits, capitalised and all-caps
  words, whitespace runs, punctuation, inside quotes, inside parentheses, line start).
- `shakespeare`: the layout of the plays (a verse line's start, the speaker lines) and two
  concepts of its language.
- `mix`: which source each character of the `mix` corpus comes from (python, english, base64, hex),
  from how the corpus was built (interp.model.mix).
- `regex`: the user's `NAME=REGEX`; every character of a non-empty match is marked. Each document's
  matching runs in a child process with a time limit, so a pattern that backtracks without end is
  named instead of hanging the command.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import multiprocessing
import re
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from interp.model.mix import MIX_SOURCES, source_marks

SOURCES = ("python", "text", "shakespeare", "mix", "regex")
SUITES = ("auto", "python", "text", "shakespeare", "mix")
INDENT_LEVELS = ("0", "1", "2", "3+")
REGEX_SECONDS = 10.0  # the time a user concept's regular expression may take on one document
BUILTIN_NAMES = frozenset(name for name in dir(builtins) if not name.startswith("_")) - frozenset(keyword.kwlist)
FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+ tokenizes f-strings into parts
FSTRING_END = getattr(tokenize, "FSTRING_END", None)
OPENERS, CLOSERS = "([{", ")]}"
DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)

TEXT_PATTERNS = {
    "text.digits": (r"[0-9]+", "a run of digits"),
    "text.capitalised word": (r"\b[A-Z][a-z]+\b", "a word of one capital then lower-case letters"),
    "text.all-caps word": (r"\b[A-Z][A-Z0-9_]*[A-Z][A-Z0-9_]*\b", "a word of two or more capitals and no lower case"),
    "text.whitespace run": (r"\s{2,}", "two or more whitespace characters in a row"),
    "text.punctuation": (r"[^\w\s]", "a character that is neither a word character nor whitespace"),
    "text.inside quotes": (r"\"[^\"\n]*\"|'[^'\n]*'", "a quoted span within one line, quotes included"),
}
SPEAKER_LINE = r"(?m)^[A-Z][A-Za-z' ]*:$"
SHAKESPEARE_PATTERNS = {
    "shakespeare.speaker line": (SPEAKER_LINE, "a line naming who speaks (`KING RICHARD III:`)"),
    "shakespeare.thou/thee/thy/thine": (r"(?i)\b(?:thou|thee|thy|thine)\b", "an archaic second-person pronoun"),
    "shakespeare.-eth/-est word": (r"\b[a-z]{2,}(?:eth|est)\b", "a lower-case word ending in -eth or -est"),
}


@dataclass(frozen=True)
class Concept:
    name: str  # SOURCE.NAME (a user concept keeps the name it was given)
    source: str  # one of SOURCES
    description: str


def python_concepts() -> list[Concept]:
    fixed = [
        ("string", "inside a string literal (f-strings included), quotes and prefix included"),
        ("docstring", "inside a module, class or function docstring"),
        ("comment", "inside a comment, from # to the line end"),
        ("f-string", "inside an f-string literal"),
        ("number", "a number literal"),
    ]
    keywords = [("keyword", "any keyword (the parent of the keywords below)")]
    keywords += [(f"keyword {word}", f"the keyword `{word}`") for word in keyword.kwlist]
    rest = [
        ("builtin name", "a name that is a Python builtin (len, print, ValueError, ...)"),
        ("bracket depth 1+", "inside at least one (, [ or { (the brackets included)"),
        ("bracket depth 2+", "inside at least two brackets"),
        *[(f"indent {level}", f"on a line of indentation level {level} (blocks deep)") for level in INDENT_LEVELS],
        ("first token of a line", "the first non-blank character of a physical line"),
        ("decorator line", "a logical line that starts with @"),
        ("import statement", "a logical line that starts with import or from"),
        ("def/class header", "a logical line that starts with def, async def or class"),
    ]
    return [Concept(f"python.{name}", "python", text) for name, text in fixed + keywords + rest]


def text_concepts() -> list[Concept]:
    named = [Concept(name, "text", text) for name, (_, text) in TEXT_PATTERNS.items()]
    return [
        *named,
        Concept("text.inside parentheses", "text", "between a ( and its matching ), the parentheses included"),
        Concept("text.line start", "text", "the first character of a line"),
    ]


def shakespeare_concepts() -> list[Concept]:
    named = [Concept(name, "shakespeare", text) for name, (_, text) in SHAKESPEARE_PATTERNS.items()]
    return [
        Concept("shakespeare.verse line start", "shakespeare", "the first character of a spoken line"),
        *named,
    ]


def mix_concepts() -> list[Concept]:
    return [Concept(f"mix.{name}", "mix", f"a character of the mix corpus's {name} pieces") for name in MIX_SOURCES]


def parse_user_concept(text: str) -> tuple[str, re.Pattern]:
    """`NAME=REGEX` -> (NAME, compiled REGEX); ValueError naming --concept and the fix otherwise."""
    name, sep, pattern = text.partition("=")
    name = name.strip()
    if not sep or not name or not pattern:
        raise ValueError(f"--concept {text!r}: write NAME=REGEX, e.g. --concept 'self=\\bself\\b'.")
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"--concept {name}: {pattern!r} is not a valid regular expression ({err}).") from err
    if compiled.fullmatch(""):
        raise ValueError(f"--concept {name}: {pattern!r} matches the empty string; make it match a character.")
    return name, compiled


class ConceptSuite:
    """The concepts scored on one corpus, and their marks on any document."""

    def __init__(self, sources: Sequence[str], user: Sequence[str] = (), *, regex_seconds: float = REGEX_SECONDS):
        unknown = [s for s in sources if s not in SOURCES[:-1]]
        if unknown:
            raise ValueError(f"unknown concept suite {unknown}; choose from {list(SOURCES[:-1])}.")
        self.sources = tuple(sources)
        self.user = [parse_user_concept(text) for text in user]
        builders = {
            "python": python_concepts,
            "text": text_concepts,
            "shakespeare": shakespeare_concepts,
            "mix": mix_concepts,
        }
        self.concepts = [c for source in self.sources for c in builders[source]()]
        self.concepts += [Concept(name, "regex", f"matches /{pattern.pattern}/") for name, pattern in self.user]
        names = [c.name for c in self.concepts]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"--concept: the names {repeated} are given twice; give each concept its own name.")
        self.python_failures = 0  # documents whose tokenizing stopped at an error
        self.regex_seconds = regex_seconds  # the time a user concept may take on one document

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def char_marks(self, text: str) -> np.ndarray:
        """[C, len(text)] bool: which characters each concept marks."""
        marks: dict[str, np.ndarray] = {}
        if "python" in self.sources:
            found, complete = python_marks(text)
            self.python_failures += not complete
            marks.update(found)
        if "text" in self.sources:
            marks.update(text_marks(text))
        if "shakespeare" in self.sources:
            marks.update(shakespeare_marks(text))
        if "mix" in self.sources:
            marks.update(source_marks(text))
        for name, pattern in self.user:
            marks[name] = bounded_regex_marks(text, name, pattern, self.regex_seconds)
        return np.stack([marks[name] for name in self.names]) if self.names else np.zeros((0, len(text)), bool)

    def token_labels(self, text: str, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
        """[n_tokens, C] bool: a token is positive when any character of text[start:end] is marked."""
        marks = self.char_marks(text)
        cumulative = np.zeros((marks.shape[0], len(text) + 1), dtype=np.int64)
        np.cumsum(marks, axis=1, out=cumulative[:, 1:])
        spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        return (cumulative[:, spans[:, 1]] - cumulative[:, spans[:, 0]] > 0).T


def default_sources(corpus_spec: str) -> tuple[str, ...]:
    """The suite for a corpus: Python source gets python + text, the plays text + shakespeare, the mix
    corpus mix + text (its Python pieces are not whole files, so the python concepts are left out)."""
    if corpus_spec == "stdlib" or corpus_spec.endswith(".py"):
        return ("python", "text")
    if corpus_spec == "shakespeare":
        return ("text", "shakespeare")
    if corpus_spec == "mix":
        return ("mix", "text")
    return ("text",)


def regex_marks(text: str, pattern: re.Pattern | str) -> np.ndarray:
    marks = np.zeros(len(text), dtype=bool)
    for match in re.finditer(pattern, text):
        marks[match.start() : match.end()] = True
    return marks


def _send_regex_marks(connection, text: str, pattern: str) -> None:
    connection.send(regex_marks(text, pattern))
    connection.close()


def bounded_regex_marks(text: str, name: str, pattern: re.Pattern, seconds: float) -> np.ndarray:
    """`regex_marks` in a child process given `seconds`: Python's `re` cannot be interrupted, and a
    pattern that backtracks catastrophically would hang the command. ValueError naming the concept when
    it runs out of time."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_send_regex_marks, args=(send, text, pattern.pattern), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(seconds):
            raise ValueError(
                f"--concept {name}: /{pattern.pattern}/ took more than {seconds:g} s on one document of "
                f"{len(text):,} characters (nested repetition such as (\\w+)+ backtracks without end); write it "
                "without nested repetition."
            )
        return receive.recv()
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()


def text_marks(text: str) -> dict[str, np.ndarray]:
    marks = {name: regex_marks(text, pattern) for name, (pattern, _) in TEXT_PATTERNS.items()}
    marks["text.inside parentheses"] = _depth_at_least(text, "(", ")", 1)
    starts = np.zeros(len(text), dtype=bool)
    starts[[0, *(m.end() for m in re.finditer("\n", text) if m.end() < len(text))] if text else []] = True
    marks["text.line start"] = starts
    return marks


def shakespeare_marks(text: str) -> dict[str, np.ndarray]:
    marks = {name: regex_marks(text, pattern) for name, (pattern, _) in SHAKESPEARE_PATTERNS.items()}
    verse = np.zeros(len(text), dtype=bool)
    speaker = re.compile(SPEAKER_LINE[4:])  # the same pattern on one line
    for match in re.finditer(r"(?m)^.+$", text):
        if match.group().strip() and not speaker.fullmatch(match.group()):
            verse[match.start()] = True
    marks["shakespeare.verse line start"] = verse
    return marks


def _depth_at_least(text: str, opener: str, closer: str, depth: int) -> np.ndarray:
    """Characters inside at least `depth` open brackets (each bracket counts as inside itself);
    an unmatched closer is ignored."""
    marks = np.zeros(len(text), dtype=bool)
    level = 0
    for i, ch in enumerate(text):
        if ch == opener:
            level += 1
        marks[i] = level >= depth
        if ch == closer and level > 0:
            level -= 1
    return marks


class _Lines:
    """(row, col) of tokenize (1-based rows, character columns) -> offsets into the text."""

    def __init__(self, text: str):
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]
        self.size = len(text)

    def offset(self, row: int, col: int) -> int:
        return min(self.starts[row - 1] + col, self.size) if row - 1 < len(self.starts) else self.size

    def span(self, row: int) -> tuple[int, int]:
        """The characters of a 1-based row, its newline included."""
        start = self.starts[row - 1]
        return start, self.starts[row] if row < len(self.starts) else self.size


def python_marks(text: str) -> tuple[dict[str, np.ndarray], bool]:
    """The python concepts' marks, and whether the whole text tokenized."""
    names = [c.name for c in python_concepts()]
    marks = {name: np.zeros(len(text), dtype=bool) for name in names}
    lines = _Lines(text)
    bracket = np.zeros(len(text) + 1, dtype=np.int64)  # +1 at each opener, -1 after each closer
    row_level: dict[int, int] = {}
    depth = fstring = 0
    logical: list[tokenize.TokenInfo] = []
    first_rows: set[int] = set()
    complete = True

    def mark(name: str, start: tuple[int, int], end: tuple[int, int]) -> None:
        marks[name][lines.offset(*start) : lines.offset(*end)] = True

    def close_logical(newline: tokenize.TokenInfo) -> None:
        head = logical[0]
        second = logical[1].string if len(logical) > 1 else ""
        kind = None
        if head.type == tokenize.OP and head.string == "@":
            kind = "decorator line"
        elif head.string in ("import", "from"):
            kind = "import statement"
        elif head.string in ("def", "class") or (head.string == "async" and second == "def"):
            kind = "def/class header"
        if kind:
            mark(f"python.{kind}", head.start, newline.end)

    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            kind = tok.type
            if kind == tokenize.INDENT:
                depth += 1
            elif kind == tokenize.DEDENT:
                depth -= 1
            if kind not in (tokenize.INDENT, tokenize.DEDENT):  # the line's first real token sets its level
                for row in range(tok.start[0], tok.end[0] + 1):
                    row_level.setdefault(row, depth)
            if kind in (tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER):
                if kind == tokenize.NEWLINE and logical:
                    close_logical(tok)
                    logical = []
                continue
            if tok.start[0] not in first_rows:
                first_rows.add(tok.start[0])
                start = lines.offset(*tok.start)
                marks["python.first token of a line"][start : start + 1] = True
            if kind != tokenize.COMMENT:
                logical.append(tok)
            if kind == tokenize.STRING:
                mark("python.string", tok.start, tok.end)
                prefix = re.match(r"[A-Za-z]*", tok.string).group()
                if "f" in prefix.lower():
                    mark("python.f-string", tok.start, tok.end)
            elif FSTRING_START is not None and kind == FSTRING_START:
                fstring += 1
                fstring_start = tok.start
            elif FSTRING_END is not None and kind == FSTRING_END:
                fstring -= 1
                mark("python.string", fstring_start, tok.end)
                mark("python.f-string", fstring_start, tok.end)
            elif kind == tokenize.COMMENT:
                mark("python.comment", tok.start, tok.end)
            elif kind == tokenize.NUMBER:
                mark("python.number", tok.start, tok.end)
            elif kind == tokenize.NAME:
                if keyword.iskeyword(tok.string):
                    mark(f"python.keyword {tok.string}", tok.start, tok.end)
                    mark("python.keyword", tok.start, tok.end)
                elif tok.string in BUILTIN_NAMES:
                    mark("python.builtin name", tok.start, tok.end)
            elif kind == tokenize.OP and not fstring and tok.string in OPENERS + CLOSERS:
                at = lines.offset(*tok.start)
                if tok.string in OPENERS:
                    bracket[at] += 1
                else:
                    bracket[at + 1] -= 1
    except (tokenize.TokenError, SyntaxError):  # IndentationError is a SyntaxError
        complete = False
    level = np.cumsum(bracket)[: len(text)]
    marks["python.bracket depth 1+"] = level >= 1
    marks["python.bracket depth 2+"] = level >= 2
    for row, blocks in row_level.items():
        if row - 1 < len(lines.starts):
            start, end = lines.span(row)
            marks[f"python.indent {INDENT_LEVELS[min(blocks, 3)]}"][start:end] = True
    for start, end in _docstring_spans(text, lines) if complete else ():
        marks["python.docstring"][start:end] = True
    return marks, complete


def _docstring_spans(text: str, lines: _Lines) -> list[tuple[int, int]]:
    """Character spans of the module's, classes' and functions' docstrings (ast columns are UTF-8
    bytes; they are turned into characters here)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    rows = text.split("\n")

    def char_col(row: int, byte_col: int) -> int:
        return len(rows[row - 1].encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))

    spans = []
    for node in ast.walk(tree):
        if isinstance(node, DOCSTRING_OWNERS) and node.body and isinstance(node.body[0], ast.Expr):
            value = node.body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                start = lines.offset(value.lineno, char_col(value.lineno, value.col_offset))
                end = lines.offset(value.end_lineno, char_col(value.end_lineno, value.end_col_offset))
                spans.append((start, end))
    return spans


def concept_suite(
    suite: str, concepts: Sequence[str], corpus: str, *, regex_seconds: float = REGEX_SECONDS
) -> ConceptSuite:
    """The ConceptSuite `--suite` and `--concept` ask for on a corpus: "auto" (the corpus's default
    sources, `default_sources`) or a comma-separated list of SUITES, plus the user's NAME=REGEX concepts."""
    parts = [s.strip() for s in suite.split(",") if s.strip()]
    if not parts or any(p not in SUITES for p in parts) or ("auto" in parts and len(parts) > 1):
        raise ValueError(f"--suite {suite!r}: give auto, or a comma-separated list of {list(SUITES[1:])}.")
    return ConceptSuite(default_sources(corpus) if parts == ["auto"] else parts, concepts, regex_seconds=regex_seconds)
