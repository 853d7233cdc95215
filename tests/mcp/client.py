"""Drives spur's MCP server with the official MCP Python SDK and prints one JSON line
per step, for tests/mcp.rs to check. Usage: client.py TARGET TOKEN MODE CALLS_JSON
where TARGET is the /mcp URL, or a JSON list [command, args...] to start and talk
to over stdio (TOKEN is then ignored), and CALLS_JSON a list of [tool, arguments]."""

import asyncio
import json
import sys

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def out(**kw):
    print(json.dumps(kw), flush=True)


def target(spec, token):
    if spec.startswith("["):
        command = json.loads(spec)
        return StdioServerParameters(command=command[0], args=command[1:])
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    return streamable_http_client(spec, http_client=http)


async def main(spec, token, mode, calls):
    async with Client(target(spec, token), mode=mode) as client:
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
