"""batchscribe: batch speech recognition with Whisper on Prefect."""

__version__ = "0.1.0"
