//! A minimal MCP stdio server with one `echo` tool, for the proxy benchmark: cheap enough that
//! the measured time is the transport and the proxy, not the server. Two unlisted tools serve
//! the proxy's memory test: `blob` answers its `parts`, joined, repeated to `bytes` bytes; `size`
//! answers the length of its `message`.

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
            Some("tools/call") => {
                let args = &msg["params"]["arguments"];
                match msg["params"]["name"].as_str() {
                    Some("blob") => json!({"content": [{"type": "text", "text": blob(args)}]}),
                    Some("size") => json!({"content": [{"type": "text",
                        "text": args["message"].as_str().map_or(0, str::len).to_string()}]}),
                    _ => json!({"content": [{"type": "text", "text": args["message"]}]}),
                }
            }
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

/// `args.parts` joined, repeated to `args.bytes` bytes (cut at a character boundary).
fn blob(args: &Value) -> String {
    let line: String = args["parts"]
        .as_array()
        .map(|parts| parts.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let line = if line.is_empty() { "x" } else { line.as_str() };
    let bytes = args["bytes"]
        .as_u64()
        .map_or(0, |n| usize::try_from(n).unwrap_or(0));
    let mut text = line.repeat(bytes / line.len() + 1);
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}
