//! gitleaks regexes are Go (RE2) syntax; this module rewrites one into the `regex` crate's
//! syntax with the same meaning, so a team's rules match here what they match in gitleaks.
//!
//! The two dialects share most of their syntax (no lookaround or backreferences in either).
//! What differs, and what this rewrites:
//! - `\d`, `\w`, `\s`, `\b` (and their negations) are ASCII in Go, Unicode in `regex`: spelled
//!   out as ASCII classes;
//! - `\Q...\E` quotes a literal in Go: escaped character by character;
//! - `\C` (any byte) becomes "any character" (a `&str` regex matches characters);
//! - a `{` that does not start a repetition (`a{`, `x{,3}`) is a literal in Go: escaped;
//! - in a class, `[` is a literal in Go but opens a nested class here, and `&&`, `--`, `~~` are
//!   set operations here: escaped;
//! - octal escapes (`\101`) need the builder's `octal` switch (see [`builder`]).

/// Go's `\d`, `\w`, `\s` as ASCII class contents.
const DIGIT: &str = "0-9";
const WORD: &str = "0-9A-Za-z_";
const SPACE: &str = r"\t\n\f\r ";

/// A `regex` builder for a translated pattern: octal escapes on (Go has them), and room for
/// the large case-insensitive counted repetitions gitleaks rules are full of.
pub(crate) fn builder(pattern: &str) -> regex::RegexBuilder {
    let mut b = regex::RegexBuilder::new(pattern);
    b.octal(true).size_limit(64 << 20);
    b
}

/// The `regex` crate spelling of the Go regex `go`; an error says what Go construct has no
/// equivalent.
pub(crate) fn translate(go: &str) -> Result<String, String> {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 16);
    let mut i = 0;
    // Inside a bracket class: the position right after `[` or `[^` (where `]` is a literal).
    let mut class_start: Option<usize> = None;
    while i < chars.len() {
        let c = chars[i];
        match (c, class_start) {
            ('\\', _) => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("trailing backslash".into());
                };
                i += 2;
                if class_start.is_some() {
                    out.push_str(&class_escape(e));
                    // `\x{..}`, `\p{..}` and the like: copy their braces as they are.
                    i = copy_escape_tail(&chars, i, e, &mut out);
                    continue;
                }
                match e {
                    'd' => push_class(&mut out, DIGIT, false),
                    'D' => push_class(&mut out, DIGIT, true),
                    'w' => push_class(&mut out, WORD, false),
                    'W' => push_class(&mut out, WORD, true),
                    's' => push_class(&mut out, SPACE, false),
                    'S' => push_class(&mut out, SPACE, true),
                    'b' => out.push_str(r"(?-u:\b)"),
                    'B' => out.push_str(r"(?-u:\B)"),
                    'C' => out.push_str("(?s:.)"),
                    'Q' => {
                        let mut literal = String::new();
                        while i < chars.len() {
                            if chars[i] == '\\' && chars.get(i + 1) == Some(&'E') {
                                i += 2;
                                break;
                            }
                            literal.push(chars[i]);
                            i += 1;
                        }
                        out.push_str(&regex::escape(&literal));
                    }
                    'E' => {} // a stray `\E` is ignored by Go too
                    'Z' => return Err(r"\Z is not supported (use \z)".into()),
                    _ => {
                        out.push('\\');
                        out.push(e);
                        i = copy_escape_tail(&chars, i, e, &mut out);
                    }
                }
            }
            ('[', None) => {
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                class_start = Some(i);
                // A `]` first is a literal member.
                if chars.get(i) == Some(&']') {
                    out.push_str(r"\]");
                    i += 1;
                }
            }
            ('[', Some(_)) => {
                // `[:alpha:]` is a POSIX class in both; any other `[` is a literal in Go.
                if chars.get(i + 1) == Some(&':')
                    && let Some(end) = posix_class_end(&chars, i + 2)
                {
                    out.extend(&chars[i..end]);
                    i = end;
                } else {
                    out.push_str(r"\[");
                    i += 1;
                }
            }
            (']', Some(_)) => {
                out.push(']');
                class_start = None;
                i += 1;
            }
            ('&' | '~', Some(_)) => {
                out.push('\\');
                out.push(c);
                i += 1;
            }
            ('-', Some(_)) if chars.get(i + 1) == Some(&'-') => {
                // `--` is set difference here; in Go the first `-` is a literal or a range.
                out.push_str(r"\-");
                i += 1;
            }
            ('{', None) => {
                if let Some(end) = repetition_end(&chars, i) {
                    out.extend(&chars[i..end]);
                    i = end;
                } else {
                    out.push_str(r"\{");
                    i += 1;
                }
            }
            ('}', None) => {
                // Only reached for a `}` that closes no repetition: a literal in Go.
                out.push_str(r"\}");
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if class_start.is_some() {
        return Err("unclosed character class".into());
    }
    Ok(out)
}

/// `[...]` or `[^...]` of ASCII class contents.
fn push_class(out: &mut String, members: &str, negated: bool) {
    out.push('[');
    if negated {
        out.push('^');
    }
    out.push_str(members);
    out.push(']');
}

/// An escape inside a bracket class, as the `regex` crate spells it.
fn class_escape(e: char) -> String {
    match e {
        'd' => DIGIT.into(),
        'w' => WORD.into(),
        's' => SPACE.into(),
        // A negated class inside a class is a union member here.
        'D' => format!("[^{DIGIT}]"),
        'W' => format!("[^{WORD}]"),
        'S' => format!("[^{SPACE}]"),
        _ => format!("\\{e}"),
    }
}

/// Copies the rest of an escape that takes an argument (`\x{41}`, `\p{Greek}`, `\pL`, `\x41`);
/// returns the index after it.
fn copy_escape_tail(chars: &[char], mut i: usize, e: char, out: &mut String) -> usize {
    match e {
        'x' | 'p' | 'P' => {
            if chars.get(i) == Some(&'{') {
                while i < chars.len() {
                    out.push(chars[i]);
                    i += 1;
                    if chars[i - 1] == '}' {
                        break;
                    }
                }
            } else {
                let n = if e == 'x' { 2 } else { 1 };
                for _ in 0..n {
                    if let Some(&c) = chars.get(i) {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            i
        }
        _ => i,
    }
}

/// The end of `[:name:]` starting at `from` (just after `[:`), when it is one.
fn posix_class_end(chars: &[char], from: usize) -> Option<usize> {
    let mut j = from;
    if chars.get(j) == Some(&'^') {
        j += 1;
    }
    let start = j;
    while chars.get(j).is_some_and(char::is_ascii_lowercase) {
        j += 1;
    }
    (j > start && chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&']')).then_some(j + 2)
}

/// The end of a counted repetition `{n}`, `{n,}` or `{n,m}` starting at `at`, when it is one.
fn repetition_end(chars: &[char], at: usize) -> Option<usize> {
    let mut j = at + 1;
    let digits = |j: &mut usize| {
        let s = *j;
        while chars.get(*j).is_some_and(char::is_ascii_digit) {
            *j += 1;
        }
        *j > s
    };
    if !digits(&mut j) {
        return None;
    }
    if chars.get(j) == Some(&',') {
        j += 1;
        digits(&mut j);
    }
    (chars.get(j) == Some(&'}')).then_some(j + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiles_to(go: &str, want: &str) {
        let got = translate(go).unwrap_or_else(|e| panic!("{go}: {e}"));
        assert_eq!(got, want, "{go}");
        builder(&got)
            .build()
            .unwrap_or_else(|e| panic!("{go} -> {got}: {e}"));
    }

    fn matches(go: &str, text: &str) -> Option<String> {
        let re = builder(&translate(go).expect("translates"))
            .build()
            .expect("compiles");
        re.find(text).map(|m| m.as_str().to_string())
    }

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        compiles_to(r"\d+", "[0-9]+");
        compiles_to(r"[\w.-]{0,20}", r"[0-9A-Za-z_.-]{0,20}");
        compiles_to(r"[^\s]", r"[^\t\n\f\r ]");
        compiles_to(r"[a\D]", r"[a[^0-9]]");
        compiles_to(r"\bx\B", r"(?-u:\b)x(?-u:\B)");
        // Go's \d does not match other scripts' digits, nor \w accented letters.
        assert_eq!(matches(r"\d+", "٣4"), Some("4".into()));
        assert_eq!(matches(r"\w+", "éab"), Some("ab".into()));
        assert_eq!(matches(r"\bab\b", "éab"), Some("ab".into()));
    }

    #[test]
    fn go_literals_stay_literals() {
        compiles_to(r"\Qa.b*\E+", r"a\.b\*+");
        compiles_to("a{,3}", r"a\{,3\}");
        compiles_to("a{2,}b{3}c{1,4}", "a{2,}b{3}c{1,4}");
        compiles_to("x{", r"x\{");
        compiles_to("[a[b]", r"[a\[b]");
        compiles_to("[]a]", r"[\]a]");
        compiles_to("[^]a]", r"[^\]a]");
        compiles_to("[a&&b]", r"[a\&\&b]");
        compiles_to("[[:alpha:]_]", "[[:alpha:]_]");
        compiles_to(r"\x{41}\pL\p{Greek}\x41", r"\x{41}\pL\p{Greek}\x41");
        compiles_to(r"(?i)(?P<k>x)(?<v>y)", r"(?i)(?P<k>x)(?<v>y)");
        assert_eq!(matches(r"\101", "zA"), Some("A".into()));
        assert_eq!(matches("a{,3}", "a{,3}"), Some("a{,3}".into()));
        assert!(translate(r"\Z").is_err());
        assert!(translate("[ab").is_err());
        assert!(translate("ab\\").is_err());
    }
}
