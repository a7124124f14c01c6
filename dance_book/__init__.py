"""dance_book: the companion book's own code, on top of the :mod:`dance` library.

What a practitioner imports lives in :mod:`dance`; this package holds what the chapters need and
nobody else does: the generated data sets (:mod:`dance_book.data`), the model zoo with its shipped
weights (:mod:`dance_book.zoo`), the ImageNet path of paper scale (:mod:`dance_book.imagenet`), the
``DANCE_SCALE`` switch (:mod:`dance_book.scale`), the theory of the theory chapters
(:mod:`dance_book.theory`, :mod:`dance_book.yeh`) and one experiment module per chapter
(:mod:`dance_book.experiments`). Dependencies point one way: ``dance_book`` imports ``dance``,
never the reverse (``tests/test_architecture.py`` checks it).
"""
