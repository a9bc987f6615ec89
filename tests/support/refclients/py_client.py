"""Lists the tools of an MCP server and calls one, with the Python MCP SDK's `Client`.

Usage: py_client.py <url> <tool> <arguments as a JSON object>
Prints one JSON object: {"tools": [names], "result": <CallToolResult as JSON>}.
"""

import asyncio
import json
import sys

from mcp import Client


async def main(url: str, tool: str, arguments: dict) -> None:
    async with Client(url) as client:
        listed = await client.list_tools()
        result = await client.call_tool(tool, arguments)
        out = {
            "tools": [t.name for t in listed.tools],
            "result": result.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
