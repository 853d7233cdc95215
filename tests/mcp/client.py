"""Drives spur's /mcp with the official MCP Python SDK and prints one JSON line per
step, for tests/mcp.rs to check. Usage: client.py URL TOKEN MODE CALLS_JSON
where CALLS_JSON is a list of [tool, arguments]."""

import asyncio
import json
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def out(**kw):
    print(json.dumps(kw), flush=True)


async def main(url, token, mode, calls):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        out(step="connected", protocol=client.protocol_version)
        tools = await client.list_tools()
        out(step="list", tools=[t.name for t in tools.tools])
        for name, args in calls:
            try:
                r = await client.call_tool(name, args)
                out(
                    step="call",
                    tool=name,
                    is_error=bool(r.is_error),
                    structured=r.structured_content,
                    text=[c.text for c in r.content if getattr(c, "type", "") == "text"],
                )
            except Exception as e:  # a protocol error: the SDK raises it
                out(step="call", tool=name, error=str(e))


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
