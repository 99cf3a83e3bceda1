"""Edit mlops.yaml text in place: set values by path, keeping every other byte as it was.

A tool that writes a user's file (``mlops rollback --write``) must leave comments, key order,
quoting and alignment alone, so that the change reviewed in a pull request is only the change
meant. Re-emitting the document (PyYAML, or ruamel.yaml's round trip, which re-flows long lines
and normalises spacing) cannot promise that. Instead each edit splices text at the exact span of
a node as PyYAML's composer reports it, and the result is parsed again to prove the value landed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from pipeline.errors import MlopsError

Scalar = str | int | float | bool | None


class EditError(MlopsError):
    """The file cannot be edited safely at a path (an alias, a merge key, a non-mapping)."""


def _flow_safe(text: str, value: Any) -> bool:
    """True when ``text`` reads back as ``value`` both in block and in flow (``{k: text}``) context."""
    try:
        return yaml.safe_load(f"k: {text}") == {"k": value} and yaml.safe_load(f"{{k: {text}}}") == {"k": value}
    except yaml.YAMLError:
        return False


def render(value: Scalar | Mapping[str, Scalar]) -> str:
    """YAML text for a scalar (plain when that reads back the same, else double-quoted) or a flow mapping."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{render(k)}: {render(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if _flow_safe(text, value) else json.dumps(text)


def _in_style(value: Scalar, style: str | None) -> str:
    """A replacement string keeps the quotes the file used for the value it replaces."""
    if isinstance(value, str) and style == '"':
        return json.dumps(value)
    if isinstance(value, str) and style == "'":
        return "'" + value.replace("'", "''") + "'"
    return render(value)


def _shared(root: yaml.Node) -> set[int]:
    """Ids of nodes reachable at more than one place (an anchor and its aliases): editing one edits all."""
    seen: set[int] = set()
    shared: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            shared.add(id(node))
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return shared


class Editor:
    """mlops.yaml text and the edits made to it so far (``text``)."""

    def __init__(self, text: str):
        self.text = text
        self._newline = "\r\n" if "\r\n" in text else "\n"

    def get(self, path: tuple[str, ...]) -> Any:
        """The value at ``path`` as the file says now (None when absent)."""
        data = yaml.safe_load(self.text)
        for key in path:
            if not isinstance(data, Mapping) or key not in data:
                return None
            data = data[key]
        return data

    def set(self, path: tuple[str, ...], value: Scalar) -> None:
        """Set the scalar at ``path``; missing keys are added beside their siblings, missing
        mappings as one flow mapping (``traffic: {green: 0}``)."""
        root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        if not isinstance(root, yaml.MappingNode):
            raise EditError("the top level of the file is not a mapping")
        shared = _shared(root)
        node = root
        for depth, key in enumerate(path):
            child = self._child(node, key, path[: depth + 1])
            if child is None:
                self._insert(node, key, self._nested(path[depth + 1:], value), path[:depth + 1])
                break
            if id(child) in shared:
                raise EditError(f"{'.'.join(path[:depth + 1])} is shared through a YAML alias; edit it by hand")
            if depth == len(path) - 1:
                if not isinstance(child, yaml.ScalarNode):
                    raise EditError(f"{'.'.join(path)} is not a single value; edit it by hand")
                self._splice(child.start_mark.index, child.end_mark.index, _in_style(value, child.style))
            elif isinstance(child, yaml.ScalarNode) and child.tag == "tag:yaml.org,2002:null":
                self._splice(child.start_mark.index, child.end_mark.index, render(self._nested(path[depth + 1:],
                                                                                            value)))
                break
            else:
                node = child
        if self.get(path) != value:  # the edit must read back exactly; anything else is a bug here
            raise EditError(f"could not set {'.'.join(path)} to {render(value)} in place; edit it by hand")

    @staticmethod
    def _nested(path: tuple[str, ...], value: Scalar) -> Any:
        nested: Any = value
        for key in reversed(path):
            nested = {key: nested}
        return nested

    @staticmethod
    def _child(node: yaml.Node, key: str, where: tuple[str, ...]) -> yaml.Node | None:
        if not isinstance(node, yaml.MappingNode):
            raise EditError(f"{'.'.join(where[:-1])} is not a mapping; edit it by hand")
        found = None
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise EditError(f"{'.'.join(where[:-1])} uses a YAML merge key (<<); edit it by hand")
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                found = value_node
        return found

    def _splice(self, start: int, end: int, text: str) -> None:
        if start == end and start > 0 and self.text[start - 1] == ":":  # an empty value right after 'key:'
            text = " " + text
        self.text = self.text[:start] + text + self.text[end:]

    def _insert(self, mapping: yaml.MappingNode, key: str, value: Any, where: tuple[str, ...]) -> None:
        entry = f"{render(key)}: {render(value)}"
        if mapping.flow_style or not mapping.value:
            if not mapping.value:
                if mapping.flow_style:  # '{}'
                    self._splice(mapping.end_mark.index - 1, mapping.end_mark.index - 1, entry)
                    return
                raise EditError(f"{'.'.join(where[:-1])} is empty; edit it by hand")
            last = mapping.value[-1][1]
            self._splice(last.end_mark.index, last.end_mark.index, f", {entry}")
            return
        indent = mapping.value[0][0].start_mark.column
        line = " " * indent + entry
        end = self._last_leaf(mapping).end_mark.index
        if end > 0 and self.text[end - 1] == "\n":  # block scalars end at the start of the next line
            self._splice(end, end, line + self._newline)
            return
        newline = self.text.find("\n", end)
        if newline == -1:
            self._splice(len(self.text), len(self.text), self._newline + line)
        else:
            self._splice(newline + 1, newline + 1, line + self._newline)

    def _last_leaf(self, node: yaml.Node) -> yaml.Node:
        """The last node written inside a block collection: new entries go on the line after it."""
        while isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style and node.value:
            last = node.value[-1]
            node = last[1] if isinstance(node, yaml.MappingNode) else last
        return node
