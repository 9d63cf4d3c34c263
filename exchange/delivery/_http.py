"""One HTTP exchange with the answer's body read up to a cap, and redirects never followed."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes  # at most the cap
    truncated: bool  # the body went on past the cap and was not read


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    timeout: float,
    max_body: int,
    content: bytes | None = None,
    data: dict[str, str] | None = None,
) -> Answer:
    """Send one request; raises ``httpx.HTTPError`` when no complete answer head arrives."""
    body = bytearray()
    truncated = False
    async with client.stream(
        method,
        url,
        headers=headers,
        content=content,
        data=data,
        timeout=timeout,
        follow_redirects=False,
    ) as response:
        async for chunk in response.aiter_bytes():
            if len(body) + len(chunk) > max_body:
                body += chunk[: max_body - len(body)]
                truncated = True
                break
            body += chunk
        return Answer(response.status_code, response.headers, bytes(body), truncated)
