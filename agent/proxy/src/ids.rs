//! The id of a message the proxy refuses without parsing it (invalid JSON, a duplicate key, an
//! oversized line): read leniently from its bytes so the error goes to the request that waits
//! for it. Only a top-level `"id"` counts (the first one): an `"id"` inside `params` or a result
//! belongs to someone else, and answering it would leave the real request waiting forever.

use serde_json::Value;

/// A usable id (a string or a number) from JSON text.
fn id_value(token: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(token)
        .ok()
        .filter(|v| v.is_string() || v.is_number())
}

/// Skips a string starting at `b[i] == b'"'`; returns the index after its closing quote (or the
/// end of `b`).
fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// The end of a scalar token (number, literal) starting at `i`.
fn skip_scalar(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// The first `key` member (its raw value) of each object at nesting depth `at` (1: the message
/// itself, 2: each message of a batch), read from the start of `b` for as long as the bytes make
/// sense.
fn members_at<'b>(b: &'b [u8], at: usize, key: &str) -> Vec<&'b [u8]> {
    let quoted = format!("\"{key}\"");
    let mut out = Vec::new();
    // Per open container: is it an object, and is a key expected next.
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let mut found_here = false;
    let mut i = ws(b, 0);
    while i < b.len() {
        match b[i] {
            b'{' => {
                stack.push((true, true));
                if stack.len() == at {
                    found_here = false;
                }
                i += 1;
            }
            b'[' => {
                stack.push((false, false));
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                if stack.is_empty() {
                    break;
                }
                i += 1;
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.1 = top.0;
                }
                i += 1;
            }
            b'"' => {
                let end = skip_string(b, i);
                let is_key = stack.last().is_some_and(|t| t.0 && t.1);
                if is_key {
                    if let Some(top) = stack.last_mut() {
                        top.1 = false;
                    }
                    let colon = ws(b, end);
                    if stack.len() == at
                        && !found_here
                        && &b[i..end] == quoted.as_bytes()
                        && b.get(colon) == Some(&b':')
                    {
                        let v = ws(b, colon + 1);
                        let v_end = match b.get(v) {
                            Some(b'"') => skip_string(b, v),
                            Some(_) => skip_scalar(b, v),
                            None => v,
                        };
                        found_here = true;
                        out.push(&b[v..v_end.min(b.len())]);
                        i = v_end;
                        continue;
                    }
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

/// The first top-level `"id"` of a (possibly invalid) message.
pub fn message_id(b: &[u8]) -> Option<Value> {
    if b.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    members_at(b, 1, "id").into_iter().next().and_then(id_value)
}

/// True when a (possibly invalid) message has a top-level `"method"`: a request or notification.
pub fn has_method(b: &[u8]) -> bool {
    !members_at(b, 1, "method").is_empty()
}

/// The ids of the messages of a (possibly invalid) batch.
pub fn batch_ids(b: &[u8]) -> Vec<Value> {
    if b.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'[') {
        return Vec::new();
    }
    members_at(b, 2, "id")
        .into_iter()
        .filter_map(id_value)
        .collect()
}

/// The top-level id of an oversized message from its kept ends: the first top-level `"id"` of
/// the head, else an `"id"` in the tail that is a member of the outermost object (after it only
/// that object closes).
pub fn oversized_id(head: &[u8], tail: &[u8]) -> Option<Value> {
    if let Some(id) = message_id(head) {
        return Some(id);
    }
    let mut from = 0;
    while let Some(pos) = find(&tail[from..], b"\"id\"") {
        let key = from + pos;
        from = key + 4;
        // The key starts a member: `{` or `,` before it.
        let before = tail[..key].iter().rev().find(|c| !c.is_ascii_whitespace());
        if !matches!(before, Some(b',' | b'{')) {
            continue;
        }
        let colon = ws(tail, key + 4);
        if tail.get(colon) != Some(&b':') {
            continue;
        }
        let v = ws(tail, colon + 1);
        let v_end = match tail.get(v) {
            Some(b'"') => skip_string(tail, v),
            Some(_) => skip_scalar(tail, v),
            None => continue,
        };
        // What follows closes exactly one more object than it opens: the message's own.
        let mut depth: i64 = 0;
        let mut i = v_end;
        while i < tail.len() {
            match tail[i] {
                b'"' => {
                    i = skip_string(tail, i);
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        if depth == -1 {
            return id_value(&tail[v..v_end]);
        }
    }
    None
}

/// The answer to a refused frame (without the newline): an error for each id it holds (a batch
/// gets a batch of them), or one error with a null id when no id can be read.
pub fn refusal(raw: &[u8], code: i64, message: &str) -> Vec<u8> {
    let batch = batch_ids(raw);
    if !batch.is_empty() {
        let errors: Vec<Value> = batch
            .iter()
            .map(|id| serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
            .collect();
        return serde_json::to_vec(&Value::Array(errors)).unwrap_or_default();
    }
    let id = message_id(raw).unwrap_or(Value::Null);
    super::frame::error_response(&id, code, message, None)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_level_id_not_a_nested_one() {
        assert_eq!(
            message_id(br#"{"jsonrpc":"2.0","id":7,"id":8,"method":"x"}"#),
            Some(7.into())
        );
        assert_eq!(
            message_id(br#"{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"id":99}},"id":"a\"b","x":1,"x":2}"#),
            Some("a\"b".into())
        );
        assert_eq!(
            message_id(br#"{"jsonrpc":"2.0","id":5,"method":"tools/list",}"#),
            Some(5.into())
        );
        assert_eq!(message_id(br#"{"params":{"id":1},"id":null}"#), None);
        assert!(has_method(
            br#"{"id":1,"method":"sampling/createMessage","x":1,"x":2}"#
        ));
        assert!(!has_method(br#"{"id":1,"result":{"method":"m"}}"#));
        assert_eq!(message_id(br#"{"id":{"a":1}}"#), None);
        assert_eq!(message_id(br#"not json "id":3"#), None);
        assert_eq!(
            batch_ids(
                br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"params":{"id":9},"id":2,"id":3}, 4]"#
            ),
            vec![Value::from(1), Value::from(2)]
        );
    }

    #[test]
    fn an_oversized_message_from_its_ends() {
        let head = br#"{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"id":99,"data":"xxxx"#;
        let tail = br#"xxxx","n":{"id":98}}},"id":7}"#;
        assert_eq!(oversized_id(head, tail), Some(7.into()));
        assert_eq!(
            oversized_id(br#"{"id":"first","x":"xx"#, b"xx\"}"),
            Some("first".into())
        );
        assert_eq!(oversized_id(br#"{"x":"xx"#, br#"xx","y":{"id":3}}"#), None);
    }
}
