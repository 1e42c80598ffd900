"""YAML read within bounds: a config is small, so anything that expands or nests past them is refused.

A few hundred bytes of aliases (a "billion laughs") expand to billions of nodes: safe_load shares the
aliased objects, so loading is quick, but whatever walks the result afterwards (validation, an error's
repr, a JSON record) walks every node. So the composer counts nodes as they would be after expansion,
and depth and string length as it goes, and stops at the first bound passed: refused in milliseconds,
before anything is built. The C parser does the scanning (a 1 MiB file in well under a second); the
composing is PyYAML's own Python, which is where the counting happens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from ._errors import ConfigError

try:
    from yaml.cyaml import CParser

    PARSER: tuple[type, ...] = (CParser,)
except ImportError:  # PyYAML built without libyaml: the pure-Python reader, scanner and parser
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    PARSER = (Reader, Scanner, Parser)

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000  # values, keys and containers, counting every alias as the copy it stands for
MAX_DEPTH = 64
MAX_STRING_CHARS = 65_536
NESTING = f"values nest more than {MAX_DEPTH} levels deep, the most a config may nest"


class BoundExceeded(ConfigError):
    """The config passed one of the bounds above; the message names the bound."""


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely and within the bounds; every error is one line naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # read no more than the bound, whatever the file is
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    if len(data) > MAX_FILE_BYTES:
        raise BoundExceeded(f"{path}: the file is larger than {MAX_FILE_BYTES // 1024} KiB, the most a "
                            "config may be; a job of many items should compute them in its task's split")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); "
                          "a config file is YAML text") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str, numbered: bool = True) -> Any:
    """Parse YAML `text` within the bounds; `source` names it in errors (a file, or `--set KEY`,
    whose errors need no line numbers: not `numbered`)."""
    if len(text) > MAX_FILE_BYTES:
        raise BoundExceeded(f"{source}: the text is longer than {MAX_FILE_BYTES // 1024} KiB, the most "
                            "a config may be")
    loader = _BoundedLoader(text, source, numbered)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "maximum nesting depth" in problem:  # libyaml scans ahead, and stops at 1,000 levels first
            raise BoundExceeded(f"{source}{f':{mark.line + 1}' if mark and numbered else ''}: "
                                f"{NESTING}") from None
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark and numbered else source
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except ConfigError:  # a bound, from the loader: itself (a ConfigError is also a ValueError)
        raise
    except ValueError as exc:  # a scalar that Python refuses to convert (an int of 5,000 digits)
        reason = str(exc).split(";")[0]  # not the advice to call sys.set_int_max_str_digits()
        raise ConfigError(f"{source}: a value cannot be read: {reason}") from None
    finally:
        loader.dispose()


class _BoundedLoader(*PARSER, SafeConstructor, Resolver):  # type: ignore[misc]
    """SafeLoader's types and tags, with PyYAML's Python composer counting what it composes."""

    # CParser brings a composer of its own, in C, that cannot count: use PyYAML's Python one.
    get_single_node = Composer.get_single_node
    compose_document = Composer.compose_document
    compose_scalar_node = Composer.compose_scalar_node
    compose_sequence_node = Composer.compose_sequence_node
    compose_mapping_node = Composer.compose_mapping_node

    def __init__(self, text: str, source: str, numbered: bool) -> None:
        PARSER[0].__init__(self, text)  # CParser, or the Reader: they take the text
        for part in PARSER[1:]:
            part.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.source = source
        self.numbered = numbered
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(node) -> its node count once expanded

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        alias = self.check_event(AliasEvent)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self._exceeded(NESTING)
        try:
            node = Composer.compose_node(self, parent, index)
        finally:
            self.depth -= 1
        if alias:  # the node composed before under its anchor: counted again, as it will expand
            size = self.sizes.get(id(node))
            if size is None:  # its anchor's value is still being composed: it would contain itself
                raise self._exceeded("an alias refers to a value that contains it; a config may not "
                                     "be recursive", node)
        elif isinstance(node, ScalarNode):
            if len(node.value) > MAX_STRING_CHARS:
                raise self._exceeded(f"a string is longer than {MAX_STRING_CHARS:,} characters, the "
                                     "most a config's string may be", node)
            size = 1
        else:
            size = 1 + sum(self.sizes[id(child)] for child in _children(node))
        self.sizes[id(node)] = size
        if size > MAX_NODES:
            raise self._exceeded(f"this value holds more than {MAX_NODES:,} values once its aliases "
                                 "are expanded, the most a config may hold", node)
        return node

    def _exceeded(self, what: str, node: Node | None = None) -> BoundExceeded:
        if not self.numbered:
            return BoundExceeded(f"{self.source}: {what}")
        mark = node.start_mark if node is not None else self.peek_event().start_mark
        return BoundExceeded(f"{self.source}:{mark.line + 1}: {what}")


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []
