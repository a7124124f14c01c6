"""Closed-form theory behind DANCE's Proposition 1, for the book's theory chapter.

Two modules, one per part of the chapter: :mod:`~dance_book.theory.proposition1` (the toy
single-layer CNN of the paper's Eq. 4/9, its decoys and Proposition 1) and
:mod:`~dance_book.theory.maxpool` (Figure A7, exact decoys through max-pooling). Their public
names are re-exported here, so the chapter reads ``theory.proposition1_terms(...)``. Yeh et al.'s
sensitivity calculus, for the Yeh chapter, is :mod:`dance_book.yeh`.
"""
from .maxpool import *  # noqa: F401,F403
from .maxpool import __all__ as _maxpool_all
from .proposition1 import *  # noqa: F401,F403
from .proposition1 import __all__ as _proposition1_all

__all__ = list(_proposition1_all) + list(_maxpool_all)
