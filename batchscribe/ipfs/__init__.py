"""Verified IPFS reads: `ipfs://CID[/path]` listed and downloaded through a trustless gateway or a kubo node."""

from batchscribe.ipfs.codec import decode_block, iter_car, verify_block
from batchscribe.ipfs.dag import IpfsFile, download, list_files, parse_ipfs_url, resolve_path, stream_file
from batchscribe.ipfs.transport import TIMEOUT_S, CarBlocks, Gateway, KuboRpc

__all__ = [
    "TIMEOUT_S",
    "CarBlocks",
    "Gateway",
    "IpfsFile",
    "KuboRpc",
    "decode_block",
    "download",
    "iter_car",
    "list_files",
    "parse_ipfs_url",
    "resolve_path",
    "stream_file",
    "verify_block",
]
