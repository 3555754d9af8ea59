//! Property tests (proptest) for the MCP framing and strict parsing, and the proxy's transparency.
//! Kept as the repository's fuzz target: `cargo test -p mcp-guard-tests --test mcp_fuzz`
//! (raise `PROPTEST_CASES` for a longer run).

use std::time::Duration;

use mcp_guard_proxy::{
    self as mcp, ProxyConfig,
    frame::{Frame, FrameReader, Kind, ParseError, classify, parse_strict},
    peek::peek,
    session::MemorySink,
};
use proptest::prelude::*;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// JSON values whose object keys are unique even case-insensitively (lowercase keys only).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z \\\\\"\u{e9}\u{1F600}\n]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// When `peek` reads `line`, the full path parses and classifies it, to the same id and method,
/// and the same `params.name` and `params.arguments`.
fn agrees_with_full_path(line: &[u8]) -> Result<(), TestCaseError> {
    let Some(p) = peek(line) else { return Ok(()) };
    let v = parse_strict(line).map_err(|e| {
        TestCaseError::fail(format!("peek accepted a line parse_strict refuses ({e})"))
    })?;
    let kind = classify(&v)
        .map_err(|e| TestCaseError::fail(format!("peek accepted what classify refuses ({e})")))?;
    let key = p.id.as_ref().map(mcp_guard_proxy::peek::PeekId::key);
    match kind {
        Kind::Request { id, method } => {
            prop_assert_eq!(key, Some(id.to_string()));
            prop_assert_eq!(p.method.as_deref(), Some(method.as_str()));
        }
        Kind::Notification { method } => {
            prop_assert_eq!(key, None);
            prop_assert_eq!(p.method.as_deref(), Some(method.as_str()));
        }
        Kind::Response { id } => {
            prop_assert_eq!(key, Some(id.to_string()));
            prop_assert_eq!(p.method.as_deref(), None);
        }
    }
    let params = v.get("params");
    prop_assert_eq!(
        p.tool.as_deref(),
        params.and_then(|p| p.get("name")).and_then(Value::as_str)
    );
    prop_assert_eq!(
        p.arguments.as_ref(),
        params.and_then(|p| p.get("arguments"))
    );
    Ok(())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes never panic, and whatever the strict parser accepts serde_json reads the same.
    #[test]
    fn strict_parse_never_panics_and_agrees(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(v) = parse_strict(&bytes) {
            let plain: Value = serde_json::from_slice(&bytes).expect("serde_json accepts it too");
            prop_assert_eq!(v, plain);
        }
    }

    /// Valid JSON without duplicate keys parses to exactly what serde_json gives (compared with
    /// serde_json's own parse: its float parsing is not round-trip exact without a feature).
    #[test]
    fn strict_parse_agrees_on_valid_json(v in json_value()) {
        let text = serde_json::to_vec(&v).expect("serialize");
        let plain: Value = serde_json::from_slice(&text).expect("valid");
        prop_assert_eq!(parse_strict(&text).expect("valid"), plain);
    }

    /// The proxy's peek (its common path, which builds no message) never accepts what the full
    /// path refuses, and reads the same id, method, tool and arguments from what it accepts:
    /// arbitrary bytes, and bytes mutated from a valid message.
    #[test]
    fn peek_never_accepts_what_the_full_path_refuses(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        v in json_value(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        id in prop_oneof![any::<i64>().prop_map(Value::from), "[a-z\\\\\"]{0,4}".prop_map(Value::from)],
    ) {
        agrees_with_full_path(&bytes)?;
        let msg = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"v": v}}});
        let mut line = serde_json::to_vec(&msg).expect("serialize");
        agrees_with_full_path(&line)?;
        let resp = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"v": v}});
        agrees_with_full_path(&serde_json::to_vec(&resp).expect("serialize"))?;
        let i = at.index(line.len());
        line[i] = byte;
        agrees_with_full_path(&line)?;
    }

    /// Adding an exact or case-variant duplicate key anywhere an object is makes it rejected.
    #[test]
    fn duplicate_keys_are_always_rejected(
        m in prop::collection::btree_map("[a-z]{1,6}", json_value(), 1..5),
        pick in any::<prop::sample::Index>(),
        upper in any::<bool>(),
        nest in any::<bool>(),
    ) {
        let keys: Vec<&String> = m.keys().collect();
        let key = keys[pick.index(keys.len())];
        let dup = if upper { key.to_uppercase() } else { key.clone() };
        let body = serde_json::to_string(&Value::Object(m.clone().into_iter().collect())).expect("ser");
        let obj = format!("{},{}:1}}", &body[..body.len() - 1], Value::String(dup.clone()));
        let text = if nest { format!(r#"{{"jsonrpc":"2.0","params":[{obj}]}}"#) } else { obj };
        prop_assert_eq!(parse_strict(text.as_bytes()), Err(ParseError::DuplicateKey(dup)));
    }

    /// Framing equals splitting on newlines, whatever the buffer size; lines over the limit are
    /// reported with their length, and the next line is intact.
    #[test]
    fn framing_matches_a_plain_split(
        lines in prop::collection::vec("[a-z{}\":,\r ]{0,40}", 0..12),
        max in 1usize..30,
        cap in 1usize..16,
        terminated in any::<bool>(),
    ) {
        let mut input = lines.join("\n").into_bytes();
        if terminated && !lines.is_empty() {
            input.push(b'\n');
        }
        let got = rt().block_on(async {
            let mut r = FrameReader::new(tokio::io::BufReader::with_capacity(cap, &input[..]), max);
            let mut out = Vec::new();
            while let Some(f) = r.next().await.expect("slice") {
                out.push(f);
            }
            out
        });
        let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
        if !terminated && want.last() == Some(&"") {
            want.pop();
        }
        prop_assert_eq!(got.len(), want.len());
        for (f, w) in got.iter().zip(want) {
            match f {
                Frame::Line(l) => { prop_assert!(w.len() <= max); prop_assert_eq!(&l[..], w.as_bytes()); }
                Frame::Oversized { len, .. } => { prop_assert!(w.len() > max); prop_assert_eq!(*len, w.len()); }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// With no rule applying, the proxy forwards each message's original bytes, in order, both
    /// ways (formatting, key order and spacing kept).
    #[test]
    fn proxy_forwards_original_bytes(
        params in prop::collection::vec(json_value(), 1..8),
        spaced in any::<bool>(),
    ) {
        let lines: Vec<String> = params.iter().enumerate().map(|(i, p)| {
            let msg = serde_json::json!({"params": p, "method": format!("m/{i}"), "jsonrpc": "2.0"});
            if spaced { serde_json::to_string_pretty(&msg).expect("ser").replace('\n', " ") }
            else { serde_json::to_string(&msg).expect("ser") }
        }).collect();
        let input = format!("{}\n", lines.join("\n"));
        let (to_server, to_client) = rt().block_on(async {
            let (mut client, proxy_client) = tokio::io::duplex(1 << 16);
            let (mut server, proxy_server) = tokio::io::duplex(1 << 16);
            let (ci, co) = tokio::io::split(proxy_client);
            let (so, si) = tokio::io::split(proxy_server);
            let proxy = tokio::spawn(mcp::run(ci, co, si, so, ProxyConfig::new("fuzz"), MemorySink::default(), None));
            client.write_all(input.as_bytes()).await.expect("write");
            client.shutdown().await.expect("close");
            // The server echoes the same notifications back.
            let mut got = vec![0u8; input.len()];
            tokio::time::timeout(Duration::from_secs(5), server.read_exact(&mut got)).await.expect("no hang").expect("read");
            server.write_all(input.as_bytes()).await.expect("write");
            server.shutdown().await.expect("close");
            let mut back = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut back)).await.expect("no hang").expect("read");
            tokio::time::timeout(Duration::from_secs(5), proxy).await.expect("ends").expect("join").expect("ok");
            (got, back)
        });
        prop_assert_eq!(String::from_utf8_lossy(&to_server), input.as_str());
        prop_assert_eq!(String::from_utf8_lossy(&to_client), input.as_str());
    }
}
