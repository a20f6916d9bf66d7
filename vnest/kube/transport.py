"""How KubeClient's requests reach an API server: aiohttp where it can, httpx where it must.

The syncer spends most of its CPU in HTTP: every pod is several requests and every
change a watch event. Measured against one API server (16 concurrent GETs, one
process; `bench/sync.py --profile` shows the same split on the real path), httpx
costs about 2.6 ms of CPU a request and aiohttp, whose HTTP parser is C, about
0.3 ms. So requests and watches go through aiohttp whenever the kubeconfig's
credentials are ones it can present: client certificates (in the TLS context), a
bearer token, a token file (re-read, as projected tokens rotate), or none.
Exec plugins and basic auth stay with lightkube's httpx adapter, which implements
them; so does the unit-test harness, which serves an in-memory API through httpx's
MockTransport.

Each transport keeps two connection pools to its server: one for requests, one
for watches. A watch holds its connection for minutes, and a pool that also
serves requests looks at every connection it holds on every request.
"""

from __future__ import annotations

import collections
import functools
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ConnectionKey
    from lightkube.config.kubeconfig import SingleConfig

# Requests (not watches) that may be in flight to one API server at once, each on a connection of its
# own (HTTP/1.1), all kept alive: a connection closed and opened again costs a TLS handshake.
REQUEST_CONNECTIONS = 64
TOKEN_FILE_REREAD = 60.0  # seconds; kubelet rotates projected tokens long before they expire


class TransportError(Exception):
    """The server could not be reached, or the connection broke (no HTTP status)."""


class Transport(Protocol):
    server: str  # the API server's URL, without a trailing slash

    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        content: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        """The status and body of one request; TransportError when there is no response."""
        ...

    def stream(self, path: str, params: dict[str, str]) -> AsyncIterator[tuple[int, bytes]]:
        """A GET without a time limit: (status, first chunk), then (status, chunk) as they come."""
        ...

    async def aclose(self) -> None: ...


def str_params(params: dict[str, Any] | None) -> dict[str, str] | None:
    return (
        {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()} if params else None
    )


class HttpxTransport:
    """Over httpx clients (lightkube's adapter, or a test's MockTransport)."""

    def __init__(self, http: httpx.AsyncClient, watch_http: httpx.AsyncClient | None = None) -> None:
        self.http = http
        self.watch_http = watch_http or http
        self.server = str(http.base_url).rstrip("/")

    @classmethod
    def from_config(cls, single: SingleConfig, timeout: float) -> HttpxTransport:
        from lightkube.config.client_adapter import ConnectionParams

        params = ConnectionParams(timeout=httpx.Timeout(timeout), trust_env=False).httpx_params(single)
        limits = httpx.Limits(
            max_connections=REQUEST_CONNECTIONS, max_keepalive_connections=REQUEST_CONNECTIONS
        )
        return cls(
            httpx.AsyncClient(**params, limits=limits),
            httpx.AsyncClient(**params, limits=httpx.Limits(max_connections=None)),
        )

    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        content: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        try:
            resp = await self.http.request(method, path, params=params, content=content, headers=headers)
        except httpx.HTTPError as e:
            raise TransportError(str(e) or type(e).__name__) from e
        return resp.status_code, resp.content

    async def stream(self, path: str, params: dict[str, str]) -> AsyncIterator[tuple[int, bytes]]:
        try:
            async with self.watch_http.stream("GET", path, params=params, timeout=None) as resp:
                if resp.status_code >= 400:
                    yield resp.status_code, await resp.aread()
                    return
                async for chunk in resp.aiter_bytes():
                    yield resp.status_code, chunk
        except httpx.HTTPError as e:
            raise TransportError(str(e) or type(e).__name__) from e

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.watch_http is not self.http:
            await self.watch_http.aclose()


@functools.cache
def newest_first_connector() -> type[aiohttp.TCPConnector]:
    """aiohttp's connector, reusing the connection released last rather than the one released first.

    aiohttp (3.11 and later) takes pooled connections oldest first. Under steady load every pooled
    connection is then used again within its 15 s keep-alive, so none is ever closed and a pool
    only grows: to the most requests that were ever in flight at once (up to REQUEST_CONNECTIONS,
    each connection holding asyncio's 128 KiB TLS buffer). Newest first, the connections a burst
    opened sit idle once it is over and the keep-alive closes them. Written against aiohttp's
    private `_release`/`_conns` (no option for it); a version that pools differently is left as is.
    """
    import aiohttp

    class NewestFirstConnector(aiohttp.TCPConnector):
        def _release(
            self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False
        ) -> None:
            super()._release(key, protocol, should_close=should_close)
            pooled = self._conns.get(key)
            if isinstance(pooled, collections.deque) and pooled and pooled[-1][0] is protocol:
                pooled.rotate(1)  # to the front, where the next request takes from

    return NewestFirstConnector


class AiohttpTransport:
    """Over aiohttp: client certificates live in the TLS context, tokens go in a header."""

    def __init__(
        self,
        server: str,
        tls: ssl.SSLContext | None,
        token: Callable[[], str | None] = lambda: None,
        timeout: float = 30.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.tls = tls
        self.token = token
        self.timeout = timeout
        # Made on first use: aiohttp wants a running event loop, and a client may be made before one.
        self._requests: aiohttp.ClientSession | None = None
        self._watches: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, single: SingleConfig, timeout: float) -> AiohttpTransport | None:
        """For a kubeconfig whose credentials aiohttp can present; None otherwise (use httpx)."""
        from lightkube.config.client_adapter import verify_cluster
        from lightkube.config.models import User

        user = single.user or User()
        if user.exec or user.auth_provider or (user.username and user.password):
            return None
        tls = verify_cluster(single.cluster, user, single.abs_file, trust_env=False)
        token: Callable[[], str | None] = lambda: None  # noqa: E731
        if user.token_file:
            token = _TokenFile(Path(single.abs_file(user.token_file)))
        elif user.token:
            fixed = user.token
            token = lambda: fixed  # noqa: E731
        return cls(
            single.cluster.server, tls if single.cluster.server.startswith("https") else None, token, timeout
        )

    def _session(self, watches: bool) -> aiohttp.ClientSession:
        import aiohttp

        session = self._watches if watches else self._requests
        if session is None or session.closed:
            connector = newest_first_connector()(
                ssl=self.tls if self.tls is not None else False,
                limit=0 if watches else REQUEST_CONNECTIONS,
                limit_per_host=0 if watches else REQUEST_CONNECTIONS,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None if watches else self.timeout),
                trust_env=False,
                auto_decompress=True,
            )
            if watches:
                self._watches = session
            else:
                self._requests = session
        return session

    def _headers(self, headers: dict[str, str]) -> dict[str, str]:
        token = self.token()
        return {**headers, "Authorization": f"Bearer {token}"} if token else headers

    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        content: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        import aiohttp

        try:
            async with self._session(False).request(
                method, self.server + path, params=params, data=content, headers=self._headers(headers)
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransportError(str(e) or type(e).__name__) from e

    async def stream(self, path: str, params: dict[str, str]) -> AsyncIterator[tuple[int, bytes]]:
        import aiohttp

        try:
            async with self._session(True).get(
                self.server + path, params=params, headers=self._headers({"Accept": "application/json"})
            ) as resp:
                if resp.status >= 400:
                    yield resp.status, await resp.read()
                    return
                async for chunk in resp.content.iter_any():
                    yield resp.status, chunk
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransportError(str(e) or type(e).__name__) from e

    async def aclose(self) -> None:
        for session in (self._requests, self._watches):
            if session is not None and not session.closed:
                await session.close()
        self._requests = self._watches = None


class _TokenFile:
    """A bearer token read from a file, again every TOKEN_FILE_REREAD seconds (projected tokens rotate)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token: str | None = None
        self._read_at = 0.0

    def __call__(self) -> str | None:
        now = time.monotonic()
        if self._token is None or now - self._read_at > TOKEN_FILE_REREAD:
            self._token = self.path.read_text().strip()
            self._read_at = now
        return self._token


def transport_for(single: SingleConfig, timeout: float) -> Transport:
    return AiohttpTransport.from_config(single, timeout) or HttpxTransport.from_config(single, timeout)
