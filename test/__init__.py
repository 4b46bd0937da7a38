"""The repository's tests, importable as the package ``test`` (``from test.fakes import ...``).

``test`` is also the name of CPython's own regression-test package, which some libraries import
(``test.support`` helpers). Putting the repository on ``sys.path`` would hide it, so this package
appends the standard library's ``test`` directory to its own search path: our modules come first,
and every name we do not define (``test.support``, ``test.libregrtest``) still resolves to
CPython's. ``test/unit/test_test_package.py`` holds this.
"""

from __future__ import annotations

import os
import sysconfig

_STDLIB_TEST = os.path.join(sysconfig.get_paths()["stdlib"], "test")
if os.path.isdir(_STDLIB_TEST) and _STDLIB_TEST not in __path__:
    __path__.append(_STDLIB_TEST)
