"""Where IPFS blocks come from: a trustless HTTP gateway (CAR responses) or a kubo node's RPC API.

Every block a source hands out is verified against its CID. A failed request raises `UnavailableError`
(the stage task retries it with backoff); a refusal that will not change raises `InputError`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import quote

import requests
from multiformats import CID

from batchscribe.errors import IncompleteError, InputError, UnavailableError, VerificationError
from batchscribe.ipfs.codec import iter_car, verify_block

CAR_MEDIA_TYPE = "application/vnd.ipld.car"
CHUNK_BYTES = 1 << 20
CACHE_BLOCKS = 64
TIMEOUT_S = (10.0, 60.0)  # connect, read
_RETRY_STATUS = frozenset({404, 408, 410, 429, 500, 502, 503, 504})  # may answer differently later


class BlockSource(Protocol):
    def get(self, cid: CID) -> bytes:
        """The verified block named `cid`."""
        ...


class CarBlocks:
    """Blocks served in the order a DAG walk asks for them, from one CAR stream, each verified."""

    def __init__(self, blocks: Iterator[tuple[CID, bytes]]) -> None:
        self._blocks = blocks
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, cid: CID) -> bytes:
        key = bytes(cid.digest)
        if key in self._cache:  # a repeat the gateway may have left out (dups=n)
            self._cache.move_to_end(key)
            return self._cache[key]
        for got, block in self._blocks:
            if got.digest == cid.digest:
                verify_block(cid, block)
                self._cache[key] = block
                if len(self._cache) > CACHE_BLOCKS:
                    self._cache.popitem(last=False)
                return block
            if bytes(got.digest) not in self._cache:  # a repeat we already verified (dups=y) is skipped
                raise VerificationError(f"unexpected block {got} where {cid} was expected: wrong or substituted DAG")
        raise IncompleteError(f"block {cid} is missing from the response")

    def finish(self) -> None:
        """Raise if the response carries blocks the walk did not need."""
        for got, _ in self._blocks:
            if bytes(got.digest) not in self._cache:
                raise VerificationError(f"unexpected extra block {got} in the response")


def _gateway_from(gateway: str | None) -> str:
    gateway = gateway or os.environ.get("IPFS_GATEWAY")
    if not gateway:
        raise InputError(
            "no IPFS gateway configured: set IPFS_GATEWAY (e.g. https://trustless-gateway.link) "
            "or pass a gateway; a local node's gateway is http://127.0.0.1:8080"
        )
    return gateway.rstrip("/")


class Gateway:
    """A trustless HTTP gateway (`?format=car`, `?format=raw`); every response is verified by the caller."""

    def __init__(
        self,
        gateway: str | None = None,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.url = _gateway_from(gateway)
        self.session = session or requests.Session()

    def _request(self, path: str, params: dict[str, str], accept: str) -> requests.Response:
        """One GET; retrying is the stage task's job (with backoff), not repeated here."""
        url = f"{self.url}/ipfs/{quote(path)}"
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        try:
            response = self.session.get(url, params=params, headers=headers, stream=True, timeout=TIMEOUT_S)
        except requests.RequestException as e:
            raise UnavailableError(f"IPFS content /ipfs/{path} not available from {self.url}: {e}") from e
        if response.status_code == 200:
            return response
        response.close()
        status = f"HTTP {response.status_code}"
        if response.status_code not in _RETRY_STATUS:
            raise InputError(f"IPFS gateway {self.url} refused /ipfs/{path}: {status}")
        raise UnavailableError(f"IPFS content /ipfs/{path} not available from {self.url} ({status})")

    def car(self, root: CID, path: list[str], scope: str) -> CarBlocks:
        """A CAR for `root/path` with `dag-scope` = block | entity | all, as a verifying block source."""
        response = self._request(
            "/".join([str(root), *path]), {"format": "car", "dag-scope": scope, "dups": "y"}, CAR_MEDIA_TYPE
        )
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith(CAR_MEDIA_TYPE):
            response.close()
            raise VerificationError(
                f"IPFS gateway {self.url} does not serve verifiable CAR responses (got {content_type or 'no type'})"
            )
        return CarBlocks(iter_car(_chunks(response)))


class KuboRpc:
    """A kubo-compatible node's RPC API (`/api/v0/block/get`), one verified block per request."""

    def __init__(self, api: str, *, session: requests.Session | None = None) -> None:
        self.url = api.rstrip("/")
        self.session = session or requests.Session()

    def get(self, cid: CID) -> bytes:
        try:
            response = self.session.post(
                f"{self.url}/api/v0/block/get",
                # The node's own deadline: a block it lacks is searched for until then, not forever.
                params={"arg": str(cid), "timeout": f"{TIMEOUT_S[1]:g}s"},
                timeout=(TIMEOUT_S[0], TIMEOUT_S[1] + 5),
            )
        except requests.RequestException as e:
            raise UnavailableError(f"IPFS node {self.url} unreachable: {e}") from e
        if response.status_code != 200:
            raise UnavailableError(f"IPFS node {self.url} has no block {cid} (HTTP {response.status_code})")
        verify_block(cid, response.content)
        return response.content


def _chunks(response: requests.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_content(CHUNK_BYTES)
    except requests.RequestException as e:
        raise UnavailableError(f"IPFS download interrupted: {e}") from e
    finally:
        response.close()
