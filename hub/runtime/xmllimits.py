"""The limits every XML reader of the hub applies (:mod:`hub.runtime.xmlsafe` enforces them).

Apart from :mod:`hub.runtime.xmlsafe` so that the adapters' config models can state them without importing lxml: a
pipeline without XML (REST, SQL) loads the models of every protocol, and lxml added 5 MB to its resident memory.
"""

from __future__ import annotations

#: How much of a document may come before its first element (declaration, comments, PIs).
PROLOG_LIMIT = 1024 * 1024

#: Default deepest nesting of an element, counted from the root element (level 1): libxml2's own default
#: limit (without huge-tree mode), and far beyond real data (SOAP responses and data files rarely pass 20);
#: a record nested this deep still reads in milliseconds.
DEFAULT_MAX_DEPTH = 256

#: libxml2's limit in the huge-tree mode the readers use: deeper documents fail to parse at all.
HARD_MAX_DEPTH = 2048
