//! Where the model reads text in MCP objects, per channel: every string of a tool definition
//! (keys of its schemas too), of a result, of a prompt or resource listing; scanning them, and
//! taking what is poisoned out.

use serde_json::Value;

use super::{Channel, Neighbours, Role, TextScan, scan_text, strip_text};

/// One string of an object: where it is (a JSON pointer; for a key, the pointer of its object
/// and the key), its channel and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spot {
    /// The value's pointer, or for a key its object's.
    pub pointer: String,
    /// For a key: the key.
    pub key: Option<String>,
    /// Which policy key decides.
    pub channel: Channel,
    /// Prose or identifier.
    pub role: Role,
    /// A value offered for the model to pass (a default, example, constant or enum value).
    pub suggested: bool,
}

/// A poisoned string.
#[derive(Clone, Debug, PartialEq)]
pub struct Flag {
    /// Where.
    pub spot: Spot,
    /// What it scanned as.
    pub scan: TextScan,
}

/// Schema keywords whose string values are not text for the model.
const SCHEMA_SILENT: &[&str] = &[
    "type",
    "format",
    "$schema",
    "$ref",
    "$id",
    "pattern",
    "contentEncoding",
    "contentMediaType",
];
/// Schema keywords whose object values map names to schemas (the names are text).
const SCHEMA_NAMED: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// Schema keywords (their keys are JSON Schema's, not the server's words).
const SCHEMA_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "$schema",
    "$ref",
    "$id",
    "$defs",
    "$comment",
    "definitions",
    "pattern",
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "items",
    "prefixItems",
    "enum",
    "const",
    "default",
    "examples",
    "description",
    "title",
    "anyOf",
    "allOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "dependentRequired",
    "dependentSchemas",
    "contains",
    "readOnly",
    "writeOnly",
    "deprecated",
    "nullable",
    "contentEncoding",
    "contentMediaType",
    "unevaluatedProperties",
    "unevaluatedItems",
    "propertyNames",
    "additionalItems",
];

fn esc(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn role_of(s: &str) -> Role {
    if s.contains(char::is_whitespace) {
        Role::Prose
    } else {
        Role::Identifier
    }
}

/// Every string in `v` (values, and keys unless `keys_silent`), as spots of `channel`.
fn strings(v: &Value, at: &str, channel: Channel, out: &mut Vec<Spot>) {
    match v {
        Value::String(s) => out.push(Spot {
            pointer: at.into(),
            key: None,
            channel,
            role: role_of(s),
            suggested: false,
        }),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, &format!("{at}/{i}"), channel, out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                out.push(Spot {
                    pointer: at.into(),
                    key: Some(k.clone()),
                    channel,
                    role: Role::Identifier,
                    suggested: false,
                });
                strings(x, &format!("{at}/{}", esc(k)), channel, out);
            }
        }
        _ => {}
    }
}

/// A JSON Schema's text: the names it defines, its descriptions, titles, enum values, defaults,
/// examples and constants, and any key that is not a JSON Schema keyword.
fn schema(v: &Value, at: &str, out: &mut Vec<Spot>) {
    let Some(m) = v.as_object() else {
        if let Some(a) = v.as_array() {
            for (i, x) in a.iter().enumerate() {
                schema(x, &format!("{at}/{i}"), out);
            }
        }
        return;
    };
    for (k, x) in m {
        let here = format!("{at}/{}", esc(k));
        if SCHEMA_NAMED.contains(&k.as_str()) {
            if let Some(named) = x.as_object() {
                for (name, sub) in named {
                    out.push(Spot {
                        pointer: here.clone(),
                        key: Some(name.clone()),
                        channel: Channel::Schema,
                        role: Role::Identifier,
                        suggested: false,
                    });
                    schema(sub, &format!("{here}/{}", esc(name)), out);
                }
            }
        } else if SCHEMA_SILENT.contains(&k.as_str()) {
        } else if matches!(
            k.as_str(),
            "description"
                | "title"
                | "$comment"
                | "enum"
                | "const"
                | "default"
                | "examples"
                | "required"
        ) {
            let from = out.len();
            strings(x, &here, Channel::Schema, out);
            if matches!(k.as_str(), "enum" | "const" | "default" | "examples") {
                for s in &mut out[from..] {
                    s.suggested = s.key.is_none();
                }
            }
        } else if SCHEMA_KEYWORDS.contains(&k.as_str()) {
            schema(x, &here, out);
        } else {
            out.push(Spot {
                pointer: at.into(),
                key: Some(k.clone()),
                channel: Channel::Schema,
                role: Role::Identifier,
                suggested: false,
            });
            strings(x, &here, Channel::Schema, out);
        }
    }
}

/// The strings of a tool definition.
pub fn tool_spots(tool: &Value) -> Vec<Spot> {
    let mut out = Vec::new();
    let Some(m) = tool.as_object() else {
        return out;
    };
    for (k, v) in m {
        let here = format!("/{}", esc(k));
        match k.as_str() {
            "inputSchema" | "outputSchema" => schema(v, &here, &mut out),
            "annotations" => strings(v, &here, Channel::Annotations, &mut out),
            "name" => out.push(Spot {
                pointer: here,
                key: None,
                channel: Channel::Definitions,
                role: Role::Identifier,
                suggested: false,
            }),
            "title" | "description" => out.push(Spot {
                pointer: here,
                key: None,
                channel: Channel::Definitions,
                role: Role::Prose,
                suggested: false,
            }),
            "icons" | "execution" => {}
            _ => strings(v, &here, Channel::Definitions, &mut out),
        }
    }
    out
}

/// The strings of a `tools/call` result or a `resources/read` result (text, embedded resources,
/// structured content; not images, blobs or URIs).
pub fn result_spots(result: &Value) -> Vec<Spot> {
    fn walk(v: &Value, at: &str, out: &mut Vec<Spot>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let here = format!("{at}/{}", esc(k));
                    match k.as_str() {
                        "type" | "mimeType" | "uri" | "data" | "blob" | "isError" => {}
                        "structuredContent" | "_meta" => strings(x, &here, Channel::Results, out),
                        _ => walk(x, &here, out),
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{at}/{i}"), out);
                }
            }
            Value::String(s) => out.push(Spot {
                pointer: at.into(),
                key: None,
                channel: Channel::Results,
                role: role_of(s),
                suggested: false,
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(result, "", &mut out);
    out
}

/// The strings of a prompt, resource or resource template as listed.
pub fn listing_spots(item: &Value) -> Vec<Spot> {
    let mut out = Vec::new();
    if let Some(m) = item.as_object() {
        for (k, v) in m {
            if !matches!(
                k.as_str(),
                "uri" | "uriTemplate" | "mimeType" | "size" | "icons"
            ) {
                strings(v, &format!("/{}", esc(k)), Channel::Prompts, &mut out);
            }
        }
    }
    out
}

fn text_at<'a>(v: &'a Value, spot: &'a Spot) -> Option<&'a str> {
    match &spot.key {
        Some(k) => Some(k.as_str()),
        None => v.pointer(&spot.pointer).and_then(Value::as_str),
    }
}

/// The poisoned strings among `spots` of `v`.
pub fn scan(v: &Value, spots: &[Spot], n: &Neighbours) -> Vec<Flag> {
    spots
        .iter()
        .filter_map(|spot| {
            let text = text_at(v, spot)?;
            let mut scan = scan_text(text, spot.role, spot.channel, n);
            // A default or example naming a secret file is what the model will pass.
            if spot.suggested && super::rules::names_secret_file(&super::hidden::fold(text)) {
                scan.score += 0.6;
                scan.reasons.insert(
                    0,
                    format!("suggests a secret file as an argument: {text:?}"),
                );
            }
            scan.poisoned().then(|| Flag {
                spot: spot.clone(),
                scan,
            })
        })
        .collect()
}

/// Takes the poisoned strings out of `v`: prose loses its hidden text and the sentences that
/// score, a schema name, enum value, default or example goes whole. Returns what was removed,
/// or `None` when something cannot go (a tool's name, or prose that stays poisoned).
pub fn strip(v: &mut Value, flags: &[Flag], n: &Neighbours) -> Option<Vec<String>> {
    let mut removed = Vec::new();
    // Deepest and last first, so earlier pointers stay valid.
    let mut flags: Vec<&Flag> = flags.iter().collect();
    flags.sort_by(|a, b| b.spot.pointer.cmp(&a.spot.pointer));
    for f in flags {
        let spot = &f.spot;
        if spot.pointer == "/name" && spot.key.is_none() {
            return None;
        }
        if let Some(k) = &spot.key {
            let obj = v.pointer_mut(&spot.pointer)?.as_object_mut()?;
            obj.remove(k);
            removed.push(format!("removed {k:?}"));
            // A removed property is no longer required.
            if let Some(parent) = spot.pointer.strip_suffix("/properties")
                && let Some(req) = v
                    .pointer_mut(&format!("{parent}/required"))
                    .and_then(Value::as_array_mut)
            {
                req.retain(|r| r.as_str() != Some(k.as_str()));
            }
        } else {
            let text = v.pointer(&spot.pointer)?.as_str()?.to_string();
            if let Some((clean, what)) = strip_text(&text, spot.role, spot.channel, n) {
                *v.pointer_mut(&spot.pointer)? = Value::String(clean);
                removed.extend(what);
                continue;
            }
            let (parent, last) = spot.pointer.rsplit_once('/')?;
            let container = v.pointer_mut(parent)?;
            match container {
                Value::Array(a) => {
                    let i: usize = last.parse().ok()?;
                    (i < a.len()).then(|| a.remove(i))?;
                }
                Value::Object(m)
                    if !["/description", "/text"]
                        .iter()
                        .any(|p| spot.pointer.ends_with(p)) =>
                {
                    m.remove(&last.replace("~1", "/").replace("~0", "~"))?;
                }
                _ => return None,
            }
            removed.push(format!(
                "removed {:?}",
                text.chars().take(80).collect::<String>()
            ));
        }
    }
    Some(removed)
}

/// What to do with terminal escapes and control characters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Controls {
    /// Render them: what a terminal shows is kept, what it would hide is removed.
    #[default]
    Strip,
    /// Show them as visible symbols (ESC as `␛`).
    Visible,
    /// Leave them.
    Keep,
}

/// Neutralises the escapes in every string value of `v`; true when something changed.
pub fn neutralise(v: &mut Value, mode: Controls) -> bool {
    if mode == Controls::Keep {
        return false;
    }
    let mut changed = false;
    crate::secrets::for_each_string(v, &mut |s| {
        if super::ansi::has_controls(s) {
            *s = match mode {
                Controls::Strip => super::ansi::render(s).visible,
                _ => super::ansi::make_visible(s),
            };
            changed = true;
        }
    });
    changed
}
