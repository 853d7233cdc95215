// Drives spur's /mcp with the official TypeScript SDK (@modelcontextprotocol/sdk,
// a 2025-11-25 client) and prints one JSON line per step for tests/mcp.rs.
// Usage: node client.mjs URL TOKEN CALLS_JSON
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, callsJson] = process.argv.slice(2);
const out = (o) => console.log(JSON.stringify(o));
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "spur-test", version: "1.0.0" });
await client.connect(transport);
out({ step: "connected", session: transport.sessionId ?? null });
const { tools } = await client.listTools();
out({ step: "list", tools: tools.map((t) => t.name) });
for (const [name, args] of JSON.parse(callsJson)) {
  try {
    const r = await client.callTool({ name, arguments: args });
    out({ step: "call", tool: name, is_error: !!r.isError, structured: r.structuredContent ?? null,
          text: r.content.filter((c) => c.type === "text").map((c) => c.text) });
  } catch (e) {
    out({ step: "call", tool: name, error: String(e.message ?? e) });
  }
}
await client.close();
