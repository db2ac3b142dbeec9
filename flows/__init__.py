"""The flows: they compose the tasks. Importing `batchscribe` first sets pyarrow's allocator before a flow
module's pandas loads pyarrow (batchscribe/malloc.py)."""

import batchscribe  # noqa: F401
