"""batchscribe: batch speech recognition with Whisper on Prefect."""

from batchscribe.malloc import arrow_uses_malloc

__version__ = "0.1.0"

arrow_uses_malloc()  # before pandas loads pyarrow: see batchscribe/malloc.py
