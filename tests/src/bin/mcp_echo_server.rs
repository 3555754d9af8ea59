//! A minimal MCP stdio server with one `echo` tool, for the proxy benchmark: cheap enough that
//! the measured time is the transport and the proxy, not the server.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let id = msg.get("id").cloned();
        let result = match msg.get("method").and_then(Value::as_str) {
            Some("initialize") => json!({
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "echo", "version": "1"}}),
            Some("tools/list") => {
                json!({"tools": [{"name": "echo", "description": "Echoes the message.",
                "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}},
                "required": ["message"]}}]})
            }
            Some("tools/call") => json!({"content": [{"type": "text",
                "text": msg["params"]["arguments"]["message"]}]}),
            _ => json!({}),
        };
        if let Some(id) = id {
            let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
            if writeln!(out, "{reply}").is_err() {
                break;
            }
            if out.flush().is_err() {
                break;
            }
        }
    }
    let _ = out.flush();
}
