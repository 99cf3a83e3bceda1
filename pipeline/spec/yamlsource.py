"""YAML bytes → plain data plus the line and column of every node, within fixed resource limits.

PyYAML (the library that parses the YAML) silently keeps the last of two duplicate keys and
forgets positions once data is constructed. We compose the node tree ourselves so that every
key and value keeps its position and duplicate keys become errors.

The file is hostile input (the pull-request workflow validates any change), so reading it is
bounded: its size, its nesting depth, and how far aliases may expand (``*a`` repeats what
``&a`` anchors, so a few lines of nested aliases can stand for billions of values) are limited,
and every problem of the text (bytes that are not UTF-8, control characters, bad syntax,
values that cannot be read) becomes a positioned problem instead of an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer

Path_ = tuple[str | int, ...]
Position = tuple[int, int]

MAX_BYTES = 1024 * 1024  # mlops.yaml files are a few kilobytes
MAX_DEPTH = 64  # mlops.yaml needs 6 levels
MAX_ALIAS_VALUES = 10_000  # values repeated by aliases and merge keys, in the whole file

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"
# libyaml reads '|#' as a block scalar followed by a comment, PyYAML refuses it
_COMMENT_AFTER_BLOCK_HEADER = re.compile(r"[|>][-+0-9]*#")
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # the line breaks YAML counts


@dataclass
class Source:
    """Parsed YAML with positions (1-based) of each value and of each mapping key."""

    file: str
    data: Any = None
    values: dict[Path_, Position] = field(default_factory=dict)
    keys: dict[Path_, Position] = field(default_factory=dict)
    problems: list[tuple[Position, str]] = field(default_factory=list)

    def at(self, path: Path_, key: bool = False) -> Position:
        """Position of a path: its key (for entries) or value; falls back to the nearest parent."""
        while True:
            table = (self.keys, self.values) if key else (self.values, self.keys)
            for positions in table:
                if path in positions:
                    return positions[path]
            if not path:
                return (1, 1)
            path = path[:-1]


class _Refused(Exception):
    """A limit was exceeded: reading stops, the file gets this one problem."""

    def __init__(self, position: Position, message: str):
        super().__init__(message)
        self.position = position
        self.message = message


class _Alias(yaml.Node):
    """Where ``*name`` appears: the node it repeats, and the alias's own position."""

    id = "alias"

    def __init__(self, target: yaml.Node, start_mark: yaml.Mark):
        super().__init__(target.tag, target.value, start_mark, target.end_mark)
        self.target = target


def _mark(mark: yaml.Mark) -> Position:
    return (mark.line + 1, mark.column + 1)


def position_of(text: str, offset: int) -> Position:
    """Line and column (1-based, in characters) of an offset into text, counting YAML's line breaks."""
    line, start = 1, 0
    for match in _LINE_BREAK.finditer(text, 0, offset):
        line, start = line + 1, match.end()
    return (line, offset - start + 1)


def _depth_error(mark: yaml.Mark) -> _Refused:
    return _Refused(_mark(mark), f"values are nested more than {MAX_DEPTH} levels deep; "
                                 "mlops.yaml needs only a few levels")


class _Bounded(Composer):
    """Composition with a nesting limit and aliases kept visible in the node tree."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            return _Alias(super().compose_node(parent, index), event.start_mark)
        if self._depth >= MAX_DEPTH:  # composing recurses: stop long before Python's recursion limit
            raise _depth_error(event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Loader(_Bounded, yaml.SafeLoader):
    """PyYAML's pure-Python safe loader: the reading whose problems (and their wording) users see."""


_HAS_LIBYAML = hasattr(yaml, "CSafeLoader")
_LIBYAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # without libyaml: never used (_HAS_LIBYAML)


class _FastLoader(_Bounded, _LIBYAML_LOADER):
    """libyaml's parser (C, ~5x faster) under the same Python composer: its events carry the same
    marks, and composing in Python keeps the nesting limit (libyaml's own composer recurses in C
    without one). Used only for files it reads without any problem; see ``parse``."""

    def __init__(self, text: str):
        _LIBYAML_LOADER.__init__(self, text)
        Composer.__init__(self)  # CSafeLoader does not initialise the Python composer it did not have

    def compose_scalar_node(self, anchor):
        node = super().compose_scalar_node(anchor)
        if not node.style and not node.value:  # an empty value (style None, or "" from libyaml) is placed
            # at the next token by libyaml, at the end of the previous one by PyYAML
            raise _NotFast()
        return node


class _NotFast(Exception):
    """The libyaml reading would place something elsewhere than the Python reading: use the latter."""


def read(raw: bytes | str, file: str) -> Source:
    """Check the size and encoding of a file's content, then parse it (see ``parse``).

    ``raw`` may be cut just past ``MAX_BYTES``: a larger file is refused without reading it all."""
    source = Source(file)
    if len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw) > MAX_BYTES:
        source.problems.append(((1, 1), f"the file is larger than 1 MiB ({MAX_BYTES:,} bytes), the most "
                                        "mlops.yaml may hold; it needs only a few kilobytes"))
        return source
    if isinstance(raw, str):
        return parse(raw, file)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        before = raw[:error.start].decode("utf-8")
        source.problems.append((position_of(before, len(before)),
                                f"byte 0x{raw[error.start]:02x} is not valid UTF-8; save the file as UTF-8"))
        return source
    return parse(text, file)


def parse(text: str, file: str) -> Source:
    """Parse YAML text; syntax errors, unreadable values and duplicate keys become ``problems``.

    A file is first read with libyaml's parser (PyYAML's C extension); if that finds any problem,
    or cannot read the text, it is read again with the pure-Python parser, whose messages and
    positions are the ones users see (tests/spec/test_yamlsource.py compares both readings)."""
    return _fast_reading(text, file) or _parse(text, file, _Loader)


def _fast_reading(text: str, file: str) -> Source | None:
    """The libyaml reading of a text, if it reads it without any problem and as the Python parser would."""
    if (not _HAS_LIBYAML or "\t" in text or "\ufeff" in text[1:] or _COMMENT_AFTER_BLOCK_HEADER.search(text)
            or ("?" in text and ("[" in text or "{" in text))):
        return None  # libyaml accepts what PyYAML refuses (tabs, '|#', '?' in flow scalars) or counts columns otherwise
    try:
        source = _parse(text, file, _FastLoader)
    except (yaml.YAMLError, UnicodeError, _NotFast):  # e.g. libyaml's reader errors, lone surrogates
        return None
    return None if source.problems else source


def _parse(text: str, file: str, loader_class: type[_Bounded]) -> Source:
    source = Source(file)
    loader = None
    try:
        loader = loader_class(text)
        node = loader.get_single_node()
        if node is not None:
            source.values[()] = _mark(node.start_mark)
            source.data = _Builder(loader, source).build(node, (), 0, None)
    except yaml.reader.ReaderError as error:  # PyYAML reports the character's offset, not its line
        source.problems.append((position_of(text, error.position), _bad_character(error.character)))
    except yaml.MarkedYAMLError as error:
        source.problems.append(_yaml_problem(error))
    except _Refused as error:
        source.problems.append((error.position, error.message))
    finally:
        if loader is not None:
            loader.dispose()
    return source


def _bad_character(code: int) -> str:
    name = "a NUL byte" if code == 0 else f"the character U+{code:04X}"
    return f"{name} is not allowed in YAML text (control characters cannot appear in the file)"


def _yaml_problem(error: yaml.MarkedYAMLError) -> tuple[Position, str]:
    mark = error.problem_mark or error.context_mark
    return (_mark(mark) if mark else (1, 1), f"invalid YAML: {error.problem or error.context}")


class _Builder:
    """Turns the node tree into plain data, counting the values that aliases repeat."""

    def __init__(self, loader: _Bounded, source: Source):
        self.loader = loader
        self.source = source
        self.repeated = 0

    def build(self, node: yaml.Node, path: Path_, depth: int, alias: yaml.Mark | None) -> Any:
        """``alias``: the position of the alias whose expansion this node is part of, if any."""
        if isinstance(node, _Alias):
            alias = alias or node.start_mark
            node = node.target
        if alias is not None:
            self._count(alias)
        if depth >= MAX_DEPTH:  # aliases can nest what the composer saw as shallow
            raise _depth_error(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth, alias)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.source.values[path + (index,)] = _mark(item.start_mark)
                items.append(self.build(item, path + (index,), depth + 1, alias))
            return items
        return self._scalar(node)

    def _count(self, alias: yaml.Mark) -> None:
        """One more value repeated by the alias at ``alias``; refuse the file past the budget."""
        self.repeated += 1
        if self.repeated > MAX_ALIAS_VALUES:
            raise _Refused(_mark(alias), f"aliases expand to more than {MAX_ALIAS_VALUES:,} values; each '*name' "
                                         "repeats everything its anchor holds, so nested aliases multiply "
                                         "(write the values out, or alias less)")

    def _mapping(self, node: yaml.MappingNode, path: Path_, depth: int, alias: yaml.Mark | None) -> dict:
        result: dict[str, Any] = {}
        for key_node, value_node, merged in self._entries(node, depth, alias):
            key = self._key(key_node)
            if key is None:
                continue
            here = path + (key,)
            if key in result:
                if not merged:  # keys given in the mapping itself override merged ones ('<<')
                    first = self.source.keys[here]
                    self.source.problems.append(
                        (_mark(key_node.start_mark),
                         f"duplicate key '{key}' (first defined at line {first[0]}); remove one of them"))
                continue
            self.source.keys[here] = _mark(key_node.start_mark)
            self.source.values[here] = _mark(value_node.start_mark)
            result[key] = self.build(value_node, here, depth + 1, alias)
        return result

    def _entries(self, node: yaml.MappingNode, depth: int, alias: yaml.Mark | None):
        """(key, value, merged) of a mapping: its own entries, then those of '<<' merges, in precedence order."""
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
            else:
                yield key_node, value_node, False
        for value_node in merges:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for merged in sources:
                via = alias or (merged.start_mark if isinstance(merged, _Alias) else None)
                target = merged.target if isinstance(merged, _Alias) else merged
                if not isinstance(target, yaml.MappingNode):
                    self.source.problems.append((_mark(merged.start_mark), "'<<' merges mappings (or a list of "
                                                                           "mappings) into this one"))
                    continue
                if depth + 1 >= MAX_DEPTH:
                    raise _depth_error(merged.start_mark)
                for key_node, item, _ in self._entries(target, depth + 1, via):
                    if via is not None:  # every merged entry repeats a key: count it
                        self._count(via)
                    yield key_node, item, True

    def _key(self, node: yaml.Node) -> str | None:
        target = node.target if isinstance(node, _Alias) else node
        if not isinstance(target, yaml.ScalarNode):
            self.source.problems.append((_mark(node.start_mark), "a key must be plain text, not a mapping or list"))
            return None
        key = self._scalar(target)
        return key if isinstance(key, str) else str(key)

    def _scalar(self, node: yaml.Node) -> Any:
        if node.tag == _STR_TAG and isinstance(node, yaml.ScalarNode):
            return node.value  # what SafeConstructor makes of a string, without its per-node bookkeeping
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as error:
            self.source.problems.append(_yaml_problem(error))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as error:
            # PyYAML's constructors fail with plain exceptions on values such as 2001-13-45, !!int "-" or a
            # 5,000-digit integer (Python refuses to convert more than 4,300 digits)
            self.source.problems.append((_mark(node.start_mark), _unreadable(node, error)))
        return None


def _unreadable(node: yaml.ScalarNode, error: Exception) -> str:
    kind = node.tag.rsplit(":", 1)[-1]
    if node.tag == _INT_TAG and isinstance(error, ValueError):
        digits = sum(c.isdigit() for c in node.value)
        return f"the integer has {digits:,} digits; numbers in mlops.yaml are far smaller"
    shown = node.value if len(node.value) <= 40 else node.value[:40] + "…"
    reason = f": {error}" if isinstance(error, ValueError) else ""
    return f"cannot read {shown!r} as {kind}{reason}"
