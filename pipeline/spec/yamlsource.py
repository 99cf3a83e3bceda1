"""YAML text → plain data plus the line and column of every node.

PyYAML (the library that parses the YAML) silently keeps the last of two duplicate keys and
forgets positions once data is constructed. We compose the node tree ourselves so that every
key and value keeps its position and duplicate keys become errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass
class Source:
    """Parsed YAML with positions (1-based) of each value and of each mapping key."""

    file: str
    data: Any = None
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    problems: list[tuple[tuple[int, int], str]] = field(default_factory=list)

    def at(self, path: Path_, key: bool = False) -> tuple[int, int]:
        """Position of a path: its key (for entries) or value; falls back to the nearest parent."""
        while True:
            table = (self.keys, self.values) if key else (self.values, self.keys)
            for positions in table:
                if path in positions:
                    return positions[path]
            if not path:
                return (1, 1)
            path = path[:-1]


def _mark(mark: yaml.Mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def parse(text: str, file: str) -> Source:
    """Parse YAML text; syntax errors and duplicate keys become ``problems``."""
    source = Source(file)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            source.values[()] = _mark(node.start_mark)
            source.data = _build(loader, node, (), source)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        position = _mark(mark) if mark else (1, 1)
        source.problems.append((position, f"invalid YAML: {error.problem or error.context}"))
    finally:
        loader.dispose()
    return source


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, source: Source) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve '<<' merge keys first
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            here = path + (key,)
            if key in result:
                first = source.keys[here]
                source.problems.append(
                    (_mark(key_node.start_mark),
                     f"duplicate key '{key}' (first defined at line {first[0]}); remove one of them")
                )
                continue
            source.keys[here] = _mark(key_node.start_mark)
            source.values[here] = _mark(value_node.start_mark)
            result[key] = _build(loader, value_node, here, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            source.values[path + (index,)] = _mark(item.start_mark)
            items.append(_build(loader, item, path + (index,), source))
        return items
    return loader.construct_object(node, deep=True)
