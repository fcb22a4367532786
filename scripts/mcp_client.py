#!/usr/bin/env python3
"""Drives an anectx MCP server with the official MCP Python SDK (PyPI `mcp`).

    mcp_client.py stdio QUESTION -- COMMAND [ARG...]   # e.g. -- anectx mcp --store /abs/store
    mcp_client.py http QUESTION URL                    # e.g. http://127.0.0.1:8181/mcp

Lists the tools, calls `index_status`, `search`, `fetch` (on the best hit),
`context` and `search` with an empty query (a tool error), and prints one
JSON object with what came back.
"""
import asyncio
import json
import sys

from mcp import ClientSession


def structured(result):
    for name in ("structured_content", "structuredContent"):
        v = getattr(result, name, None)
        if v is not None:
            return v
    return None


def is_error(result):
    for name in ("is_error", "isError"):
        v = getattr(result, name, None)
        if v is not None:
            return bool(v)
    return False


def texts(result):
    return [c.text for c in result.content if getattr(c, "type", "") == "text"]


async def drive(read, write, question):
    out = {}
    async with ClientSession(read, write) as session:
        init = await session.initialize()
        out["server"] = init.server_info.name if hasattr(init, "server_info") else init.serverInfo.name
        out["protocol"] = str(getattr(init, "protocol_version", getattr(init, "protocolVersion", "")))
        tools = (await session.list_tools()).tools
        out["tools"] = {
            t.name: {
                "input": sorted((getattr(t, "input_schema", None) or t.inputSchema).get("properties", {})),
                "output": sorted(
                    ((getattr(t, "output_schema", None) or getattr(t, "outputSchema", None)) or {}).get(
                        "properties", {}
                    )
                ),
            }
            for t in tools
        }
        st = await session.call_tool("index_status", {})
        out["index_status"] = structured(st)
        s = await session.call_tool("search", {"query": question, "k": 3})
        out["search"] = structured(s)
        out["search_error"] = is_error(s)
        fs = await session.call_tool(
            "search", {"query": question, "k": 3, "filters": {"path": "*cats*"}}
        )
        out["search_filtered"] = structured(fs)
        badf = await session.call_tool(
            "search", {"query": question, "filters": {"modified_after": "yesterday"}}
        )
        out["bad_filter"] = {"is_error": is_error(badf), "text": texts(badf)}
        hits = (out["search"] or {}).get("hits", [])
        if hits:
            f = await session.call_tool("fetch", {"id": hits[0]["id"]})
            out["fetch"] = structured(f)
        c = await session.call_tool("context", {"query": question, "budget_tokens": 200})
        out["context"] = structured(c)
        out["context_error"] = is_error(c)
        bad = await session.call_tool("search", {"query": "  "})
        out["empty_query"] = {"is_error": is_error(bad), "text": texts(bad)}
        missing = await session.call_tool("fetch", {"id": "999999999"})
        out["missing_chunk"] = {"is_error": is_error(missing), "text": texts(missing)}
    return out


async def main():
    mode, question = sys.argv[1], sys.argv[2]
    if mode == "stdio":
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        cmd = sys.argv[sys.argv.index("--") + 1 :]
        params = StdioServerParameters(command=cmd[0], args=cmd[1:], cwd="/")
        async with stdio_client(params) as (read, write):
            out = await drive(read, write, question)
    elif mode == "http":
        from mcp.client.streamable_http import streamable_http_client

        async with streamable_http_client(sys.argv[3]) as streams:
            out = await drive(streams[0], streams[1], question)
    else:
        sys.exit(f"unknown mode {mode!r}: use stdio or http")
    print(json.dumps(out))


asyncio.run(main())
