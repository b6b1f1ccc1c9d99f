"""What a patch takes from a checkout, declared as data, and the one ``load`` that imports and checks it.

Each patch module lists the upstream objects it uses (``PIECES``: name -> ``"module"`` or ``"module:attribute"``)
and the leading parameter names it relies on (``SIGNATURES``); :func:`loader` turns both into the patch's
``load(up)``, which imports the pieces inside an entered session, in the listed order, and refuses a checkout whose
names or signatures changed with an :class:`~patches._checkout.UpstreamError` naming the file and what it expected.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ._checkout import UpstreamSpec, check_signature, require_attribute
from ._session import UpstreamSession

__all__ = ["Pieces", "Signature", "load_pieces", "loader"]


@dataclass(frozen=True)
class Signature:
    """Parameter names a patch relies on.

    Attributes:
        target: a piece, or a piece's attribute (``"ACMNet.forward"``); a class stands for its ``__init__``.
        parameters: the leading parameter names at the pinned commit (``self`` excluded).
        where: how the message names it, with its file (``"model/ACMNet.py: ACMNet.forward"``).
    """

    target: str
    parameters: tuple[str, ...]
    where: str


class Pieces(types.SimpleNamespace):
    """The upstream modules, classes and functions a patch's ``load`` imported, by the names of its ``PIECES``."""


def load_pieces(up: UpstreamSession, spec: UpstreamSpec, pieces: Mapping[str, str],
                signatures: Sequence[Signature]) -> Pieces:
    """Import ``pieces`` from the checkout of an entered session and check ``signatures``.

    Args:
        up: the entered session.
        spec: the upstream (for messages).
        pieces: name -> ``"module"`` (the module itself) or ``"module:attribute"``.
        signatures: the parameter names to check.

    Returns:
        The pieces.

    Raises:
        UpstreamError: if a module fails to import, lacks an attribute, or a signature differs.
    """
    loaded = {}
    for name, path in pieces.items():
        module_name, _, attribute = path.partition(":")
        module = up.import_module(module_name)
        file = module_name.replace(".", "/") + ".py"
        loaded[name] = require_attribute(module, attribute, file, spec) if attribute else module
    result = Pieces(**loaded)
    for signature in signatures:
        piece, _, member = signature.target.partition(".")
        target = getattr(result, piece)
        if member:
            target = require_attribute(target, member, signature.where, spec)
        check_signature(target, signature.parameters, signature.where, spec)
    return result


def loader(spec: UpstreamSpec, pieces: Mapping[str, str],
           signatures: Sequence[Signature]) -> Callable[[UpstreamSession], Pieces]:
    """The ``load`` function of a patch: :func:`load_pieces` with the patch's own lists.

    Args:
        spec: the upstream.
        pieces: the patch's ``PIECES``.
        signatures: the patch's ``SIGNATURES``.

    Returns:
        ``load(up) -> Pieces``.
    """

    def load(up: UpstreamSession) -> Pieces:
        return load_pieces(up, spec, pieces, signatures)

    load.__doc__ = (f"Import the {spec.short} pieces (``PIECES``) inside an entered session and check the signatures "
                    "the patch relies on (``SIGNATURES``); raises ``UpstreamError`` naming what changed.")
    return load
