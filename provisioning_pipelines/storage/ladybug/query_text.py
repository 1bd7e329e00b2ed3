"""A customer's query text, checked before the engine sees it: its length, and the few things
the engine allows even on a read-only handle that reach past the graph.

Clauses that read or write the server's files or load code (``LOAD FROM``, ``COPY``, ``EXPORT``
/ ``IMPORT DATABASE``, ``INSTALL``, ``LOAD EXTENSION``, ``ATTACH``, ``DETACH``), a ``CALL
setting=...`` that would change the host's settings, and a query's own transaction statements
(``queries.run`` makes each query one transaction) are refused by a scan of the text's words,
outside strings and comments. Whether a query writes is never read here: the engine decides.
"""

from __future__ import annotations

import re

from provisioning_pipelines.errors import Forbidden, InvalidRequest, QueryTooLong
from provisioning_pipelines.storage.ladybug.queries import QueryLimits

_WORDS = re.compile(r"""('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?)|`[^`]*`?|//[^\n]*"""
                    r"""|/\*.*?(?:\*/|$)|([A-Za-z_][A-Za-z0-9_]*)|(\S)""", re.S)
#: How a string literal stands among the words.
_STRING = "'"
#: What may follow the first word of a clause that reaches the server's files or loads code
#: (``WORD``: any word; ``_STRING``: a string literal; ``(``: a subquery).
WORD = "<word>"
_OUTSIDE: dict[str, frozenset[str]] = {
    "LOAD": frozenset({"FROM", "WITH", "EXTENSION"}), "EXPORT": frozenset({"DATABASE"}),
    "IMPORT": frozenset({"DATABASE"}), "INSTALL": frozenset({WORD}),
    "UNINSTALL": frozenset({WORD}), "CHECKPOINT": frozenset({"", ";"}),
    "CURRENT_SETTING": frozenset({"("}),
    "ATTACH": frozenset({_STRING}), "DETACH": frozenset({WORD}),
    "COPY": frozenset({"(", WORD})}
#: Why a clause is refused, where it is not the server's files.
_WHY = {"CHECKPOINT": "is the host's own work (it runs one before every copy)",
        "CURRENT_SETTING": "reads the host's settings (its paths among them)"}
#: Statements that end a transaction (a query is one transaction: ``_one_transaction``).
_ENDS = frozenset({"COMMIT", "ROLLBACK", "COMMIT_SKIP_CHECKPOINT", "ROLLBACK_SKIP_CHECKPOINT"})
#: Words after which a name is a variable, a property, a label or a parameter, not a clause.
_NAMING = frozenset({".", ":", "$", "AS"})


def check_query(cypher: object, limits: QueryLimits) -> str:
    """The query text if it may run: 422 when empty or when it opens or ends a transaction of
    its own, 413 past the length limit, 403 for a clause that reaches the server's files."""
    if not isinstance(cypher, str) or not cypher.strip():
        raise InvalidRequest("query: no query given", field="query")
    if len(cypher) > limits.max_query_length:
        raise QueryTooLong(f"query: {len(cypher)} characters, more than the "
                           f"{limits.max_query_length} this graph's tier allows "
                           "(max_query_length)", field="query")
    tokens: list[tuple[str, bool]] = []  # (text, is a word)
    for match in _WORDS.finditer(cypher):
        text, word, mark = match.group(1), match.group(2), match.group(3)
        if text is not None:
            tokens.append((_STRING, False))
        elif word is not None:
            tokens.append((word.upper(), True))
        elif mark is not None:
            tokens.append((mark, False))
    for index, (token, is_word) in enumerate(tokens):
        if not is_word or (index and tokens[index - 1][0] in _NAMING):
            continue
        after, after_is_word = tokens[index + 1] if index + 1 < len(tokens) else ("", False)
        then = tokens[index + 2][0] if index + 2 < len(tokens) else ""
        at_start = index == 0 or tokens[index - 1][0] == ";"
        if at_start and (token in _ENDS or (token == "BEGIN" and after == "TRANSACTION")):
            # the query is one transaction already (``_one_transaction``)
            raise InvalidRequest(f"query: {token} {'TRANSACTION ' if token == 'BEGIN' else ''}"
                                 "is not needed: a query's statements run as one "
                                 "transaction, all of them or none", field="query")
        if token == "CALL" and after_is_word and then == "=":
            # ``CALL timeout=...`` and the like: the host's settings, not the customer's
            raise Forbidden(f"query: CALL {after.lower()}=... changes the host's settings, "
                            "which a customer's query may not do", field="query")
        if token not in _OUTSIDE:
            continue
        if token == "DETACH" and after == "DELETE":
            continue  # Cypher's DETACH DELETE, not LadybugDB's DETACH of a database
        if token == "COPY" and after_is_word and then not in ("FROM", "TO"):
            continue  # a name (``WITH copy AS c``), not COPY table FROM | TO
        if after in _OUTSIDE[token] or (after_is_word and WORD in _OUTSIDE[token]):
            # "ATTACH '<path>'", "COPY (<query>) TO": the clause's words, not its marks
            clause = token if token in _WHY or after in (_STRING, "(") else f"{token} {after}"
            why = _WHY.get(token, "reaches the server's files or loads code")
            raise Forbidden(f"query: {clause} {why}, which a customer's query may not do",
                            field="query")
    return cypher
