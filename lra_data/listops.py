"""The ListOps language (Nangia & Bowman 2018, arXiv 1804.06028; LRA, arXiv 2011.04006).

An expression is a digit ``0``-``9`` or ``[OP a_1 ... a_k ]`` with ``k >= 2`` arguments and
``OP`` one of

* ``MIN``/``MAX``: minimum / maximum of the arguments,
* ``MED``: ``int(statistics.median(args))`` -- for an even count the mean of the two middle
  values with the fraction dropped (LRA: ``int(np.median(...))``),
* ``SM``: ``sum(args) % 10``.

LRA writes each source with the parentheses of its binary tuple tree, e.g. ``[MAX 2 9 ]`` is
``( ( ( [MAX 2 ) 9 ) ] )`` (see :func:`to_lra_source`). The tokenizer drops ``(`` and ``)``
and keeps ``]`` as its own token, so the id sequence is unambiguous (the original LRA TF
pipeline used an alphanumeric-only tokenizer that also dropped ``]``; we keep it, as the
state-spaces/S4 pipeline does).

Fixed vocabulary (``VOCAB``, 16 ids): ``0`` = pad, ``1..10`` = digits ``0..9`` (id = digit + 1),
``11`` = ``[MIN``, ``12`` = ``[MAX``, ``13`` = ``[MED``, ``14`` = ``[SM``, ``15`` = ``]``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
OPEN = "("
CLOSE = ")"
PAD_ID = 0
VOCAB: tuple[str, ...] = ("<pad>", *(str(d) for d in range(10)), *OPERATORS, END)
VOCAB_SIZE = len(VOCAB)
TOKEN_TO_ID: dict[str, int] = {tok: i for i, tok in enumerate(VOCAB) if i != PAD_ID}
DIGIT_ID0 = TOKEN_TO_ID["0"]
END_ID = TOKEN_TO_ID[END]
OPERATOR_IDS: tuple[int, ...] = tuple(TOKEN_TO_ID[op] for op in OPERATORS)
NUM_CLASSES = 10

# A tree: a digit, or (operator, [children]).
Tree = int | tuple[str, list["Tree"]]


def apply_operator(op: str, values: Sequence[int]) -> int:
    """Value of ``[op values... ]`` (plain Python; the reference for every fast path)."""
    if len(values) == 0:
        raise ValueError(f"operator {op!r} has no arguments")
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        return int(statistics.median(values))
    if op == "[SM":
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {op!r}; allowed: {', '.join(OPERATORS)}")


def source_tokens(source: str) -> list[str]:
    """Whitespace tokens of a source with ``(``/``)`` removed."""
    return [tok for tok in source.split() if tok not in (OPEN, CLOSE)]


def tokenize(source: str) -> list[int]:
    """Ids of a source string (plain reference of the vectorized file tokenizer)."""
    ids = []
    for tok in source_tokens(source):
        if tok not in TOKEN_TO_ID:
            raise ValueError(f"unknown ListOps token {tok!r}; allowed: {', '.join(VOCAB[1:])}")
        ids.append(TOKEN_TO_ID[tok])
    return ids


def detokenize(ids: Sequence[int]) -> str:
    """Source text (without parentheses) of an id sequence; pad ids are skipped."""
    out = []
    for i in ids:
        i = int(i)
        if not 0 <= i < VOCAB_SIZE:
            raise ValueError(f"ListOps id {i} out of range [0, {VOCAB_SIZE})")
        if i != PAD_ID:
            out.append(VOCAB[i])
    return " ".join(out)


def parse(tokens: str | Sequence[str]) -> Tree:
    """Parse a source string (or its token list) into a tree; raises on malformed input."""
    toks = source_tokens(tokens) if isinstance(tokens, str) else list(tokens)
    stack: list[tuple[str, list[Tree]]] = []
    result: Tree | None = None
    for pos, tok in enumerate(toks):
        if result is not None:
            raise ValueError(f"trailing token {tok!r} at position {pos} after a complete tree")
        if tok in OPERATORS:
            stack.append((tok, []))
        elif tok == END:
            if not stack:
                raise ValueError(f"unmatched ']' at position {pos}")
            node = stack.pop()
            if len(node[1]) < 1:
                raise ValueError(f"operator {node[0]} closed without arguments at {pos}")
            if stack:
                stack[-1][1].append(node)
            else:
                result = node
        elif len(tok) == 1 and tok.isdigit():
            if stack:
                stack[-1][1].append(int(tok))
            else:
                result = int(tok)
        else:
            raise ValueError(f"unknown ListOps token {tok!r} at position {pos}")
    if stack or result is None:
        raise ValueError("incomplete ListOps expression (unclosed operator or empty input)")
    return result


def evaluate_tree(tree: Tree) -> int:
    """Value of a tree (recursive, plain Python)."""
    if isinstance(tree, int):
        return tree
    op, children = tree
    return apply_operator(op, [evaluate_tree(c) for c in children])


def evaluate(source: str) -> int:
    """Value of a source string (the evaluator used to check every generated label)."""
    return evaluate_tree(parse(source))


def evaluate_ids(ids: Sequence[int]) -> int:
    """Value of a tokenized expression (pad ids ignored)."""
    return evaluate_tree(parse([VOCAB[int(i)] for i in ids if int(i) != PAD_ID]))


def to_lra_source(tree: Tree) -> str:
    """LRA's string for a tree: ``[OP a b ]`` becomes ``( ( ( [OP a ) b ) ] )``.

    LRA builds ``t = (op, a_1)``, then ``t = (t, a_i)`` for each further argument and finally
    ``(t, ']')``, and writes every pair as ``( left right )``.
    """
    if isinstance(tree, int):
        return str(tree)
    op, children = tree
    text = f"( {op} {to_lra_source(children[0])} )"
    for child in children[1:]:
        text = f"( {text} {to_lra_source(child)} )"
    return f"( {text} {END} )"


def tree_length(tree: Tree) -> int:
    """Token count without parentheses (LRA's length): 1 per digit, 2 per operator (op, ])."""
    if isinstance(tree, int):
        return 1
    return 2 + sum(tree_length(c) for c in tree[1])


def tree_depth(tree: Tree) -> int:
    """Depth with the root at depth 1 (a lone digit has depth 1)."""
    if isinstance(tree, int):
        return 1
    return 1 + max(tree_depth(c) for c in tree[1])


def tree_from_ids(ids: Sequence[int]) -> Tree:
    """Tree of a tokenized expression."""
    return parse([VOCAB[int(i)] for i in ids if int(i) != PAD_ID])
