//! Checking one gitleaks config file: every key, type and regex, each problem located by line,
//! column and key path.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, TableLike, Value};

use super::super::{
    go_regex,
    spec::{AllowlistSpec, Condition, RuleSpec, RulesSpec, Target},
};
use super::RulesProblem;

/// One file's own rules and what it asks of `[extend]`.
pub(super) struct FileRules {
    pub(super) spec: RulesSpec,
    pub(super) use_default: bool,
    pub(super) disabled: Vec<String>,
    /// Global allowlists aimed at rules (`targetRules`), attached once the rules are complete.
    pub(super) targeted: Vec<(String, AllowlistSpec, Located)>,
    /// Where each of the file's rules is, for problems found once `[extend]` is applied.
    pub(super) places: Vec<(String, Located)>,
}

/// Where a problem is reported.
#[derive(Clone)]
pub(super) struct Located {
    file: String,
    line: usize,
    col: usize,
    key: String,
}

impl Located {
    pub(super) fn problem(self, message: String) -> RulesProblem {
        RulesProblem {
            file: self.file,
            line: self.line,
            col: self.col,
            key: self.key,
            message,
        }
    }
}

pub(super) struct Checker<'t> {
    file: String,
    text: &'t str,
    pub(super) problems: Vec<RulesProblem>,
    /// Whether each regex is compiled to check it (not for the built-in catalog, which a
    /// unit test checks whole: compiling every regex is most of what parsing costs).
    compile: bool,
    /// Where each line of `text` starts, made on the first location asked (every rule's is:
    /// scanning the text up to each one was most of what parsing the catalog cost).
    line_starts: std::cell::OnceCell<Vec<usize>>,
}

/// A key of `table`, found without regard to case: (its span, the item).
pub(super) fn get<'d>(
    table: &'d dyn TableLike,
    key: &str,
) -> Option<(Option<Range<usize>>, &'d Item)> {
    table
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(k, item)| {
            let span = table
                .get_key_value(k)
                .and_then(|(key, _)| key.span())
                .or_else(|| item.span());
            (span, item)
        })
}

fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(Value::String(_)) => "a string",
        Item::Value(Value::Integer(_)) => "an integer",
        Item::Value(Value::Float(_)) => "a float",
        Item::Value(Value::Boolean(_)) => "a boolean",
        Item::Value(Value::Datetime(_)) => "a date-time",
        Item::Value(Value::Array(_)) => "an array",
        Item::Value(Value::InlineTable(_)) | Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

impl<'t> Checker<'t> {
    pub(super) fn new(file: String, text: &'t str) -> Self {
        Checker {
            file,
            text,
            problems: Vec::new(),
            compile: true,
            line_starts: std::cell::OnceCell::new(),
        }
    }

    /// A checker that translates regexes without compiling them, for text known to be valid.
    pub(super) fn trusting(file: String, text: &'t str) -> Self {
        Checker {
            compile: false,
            ..Checker::new(file, text)
        }
    }

    fn at(&self, span: Option<&Range<usize>>, key: &str) -> Located {
        let (line, col) = span.map_or((1, 1), |s| self.line_col(s.start));
        Located {
            file: self.file.clone(),
            line,
            col,
            key: key.to_string(),
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let text = self.text;
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        // The lines starting at or before `offset`; the first always does.
        let line = starts.partition_point(|&s| s <= offset).max(1);
        let start = starts[line - 1];
        (line, text[start..offset].chars().count() + 1)
    }

    fn error(&mut self, span: Option<&Range<usize>>, key: &str, message: impl Into<String>) {
        let p = self.at(span, key).problem(message.into());
        self.problems.push(p);
    }

    /// Reports keys of `table` not in `known` (lowercase).
    fn known_keys(&mut self, table: &dyn TableLike, path: &str, known: &[&str]) {
        for (key, item) in table.iter() {
            if !known.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                let span = table
                    .get_key_value(key)
                    .and_then(|(k, _)| k.span())
                    .or_else(|| item.span());
                self.error(
                    span.as_ref(),
                    &join(path, key),
                    format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
    }

    fn string(&mut self, table: &dyn TableLike, key: &str, path: &str) -> Option<String> {
        let (span, item) = get(table, key)?;
        if let Some(s) = item.as_str() {
            Some(s.to_string())
        } else {
            self.error(
                span.as_ref(),
                &join(path, key),
                format!("expected a string, found {}", describe(item)),
            );
            None
        }
    }

    fn strings(&mut self, table: &dyn TableLike, key: &str, path: &str) -> Vec<String> {
        let Some((span, item)) = get(table, key) else {
            return Vec::new();
        };
        let key = join(path, key);
        let Some(array) = item.as_array() else {
            self.error(
                span.as_ref(),
                &key,
                format!("expected an array of strings, found {}", describe(item)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, v) in array.iter().enumerate() {
            match v.as_str() {
                Some(s) => out.push(s.to_string()),
                None => self.error(
                    v.span().or_else(|| span.clone()).as_ref(),
                    &format!("{key}[{i}]"),
                    "expected a string",
                ),
            }
        }
        out
    }

    /// A Go regex at `key`, checked and translated.
    fn regex(&mut self, table: &dyn TableLike, key: &str, path: &str) -> Option<String> {
        let go = self.string(table, key, path)?;
        let span = get(table, key).and_then(|(s, item)| item.span().or(s));
        self.translate(&go, span.as_ref(), &join(path, key))
    }

    fn translate(&mut self, go: &str, span: Option<&Range<usize>>, key: &str) -> Option<String> {
        let compile = self.compile;
        let checked = go_regex::translate(go).and_then(|rust| {
            if !compile {
                return Ok(rust);
            }
            go_regex::builder(&rust)
                .build()
                .map(|_| rust)
                .map_err(|e| one_line(&e.to_string()))
        });
        match checked {
            Ok(rust) => Some(rust),
            Err(e) => {
                self.error(span, key, format!("not a valid regex: {e}"));
                None
            }
        }
    }

    pub(super) fn document(&mut self) -> Option<FileRules> {
        let doc = match ImDocument::parse(self.text) {
            Ok(doc) => doc,
            Err(e) => {
                let span = e.span();
                self.error(
                    span.as_ref(),
                    "",
                    format!("invalid TOML: {}", one_line(e.message())),
                );
                return None;
            }
        };
        let root: &Table = doc.as_table();
        self.known_keys(
            root,
            "",
            &[
                "title",
                "description",
                "minVersion",
                "extend",
                "rules",
                "allowlist",
                "allowlists",
            ],
        );
        let mut file = FileRules {
            spec: RulesSpec::default(),
            use_default: false,
            disabled: Vec::new(),
            targeted: Vec::new(),
            places: Vec::new(),
        };
        if let Some((span, item)) = get(root, "extend") {
            self.extend(item, span.as_ref(), &mut file);
        }
        if let Some((span, item)) = get(root, "rules") {
            match item.as_array_of_tables() {
                Some(rules) => {
                    for (i, rule) in rules.iter().enumerate() {
                        let path = format!("rules[{i}]");
                        if let Some((rule, at)) = self.rule(rule, &path) {
                            if file.spec.rules.iter().any(|r| r.id == rule.id) {
                                self.error(
                                    rule_span(rules.get(i)).as_ref(),
                                    &join(&path, "id"),
                                    format!("rule {:?} is defined twice", rule.id),
                                );
                            }
                            file.places.push((rule.id.clone(), at));
                            file.spec.rules.push(rule);
                        }
                    }
                }
                None => self.error(
                    span.as_ref(),
                    "rules",
                    format!("expected [[rules]] tables, found {}", describe(item)),
                ),
            }
        }
        let old = get(root, "allowlist");
        let new = get(root, "allowlists");
        if let (Some((span, _)), Some(_)) = (&old, &new) {
            self.error(
                span.as_ref(),
                "allowlist",
                "[allowlist] is the older form of [[allowlists]]: use one or the other",
            );
        }
        for (span, item, path) in old
            .map(|(s, i)| (s, i, "allowlist"))
            .into_iter()
            .chain(new.map(|(s, i)| (s, i, "allowlists")))
        {
            for (table, key, table_span) in self.tables(item, span.as_ref(), path) {
                let targets = self.strings(table, "targetRules", &key);
                if let Some(allowlist) = self.allowlist(table, table_span.as_ref(), &key, true) {
                    if targets.is_empty() {
                        file.spec.allowlists.push(allowlist);
                    } else {
                        let at = self.at(table_span.as_ref(), &join(&key, "targetRules"));
                        for target in targets {
                            file.targeted.push((target, allowlist.clone(), at.clone()));
                        }
                    }
                }
            }
        }
        Some(file)
    }

    /// A table or an array of tables at `item`: each with its key path and span.
    fn tables<'d>(
        &mut self,
        item: &'d Item,
        span: Option<&Range<usize>>,
        path: &str,
    ) -> Vec<(&'d dyn TableLike, String, Option<Range<usize>>)> {
        if let Some(array) = item.as_array_of_tables() {
            return array
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let s = t.span().or_else(|| span.cloned());
                    (t as &dyn TableLike, format!("{path}[{i}]"), s)
                })
                .collect();
        }
        if let Some(t) = item.as_table_like() {
            vec![(t, path.to_string(), span.cloned())]
        } else {
            self.error(
                span,
                path,
                format!("expected a table, found {}", describe(item)),
            );
            Vec::new()
        }
    }

    fn extend(&mut self, item: &Item, span: Option<&Range<usize>>, file: &mut FileRules) {
        let Some(table) = item.as_table_like() else {
            self.error(
                span,
                "extend",
                format!("expected a table, found {}", describe(item)),
            );
            return;
        };
        self.known_keys(
            table,
            "extend",
            &["useDefault", "path", "url", "disabledRules"],
        );
        if let Some((s, v)) = get(table, "useDefault") {
            match v.as_bool() {
                Some(b) => file.use_default = b,
                None => self.error(
                    s.as_ref(),
                    "extend.useDefault",
                    format!("expected true or false, found {}", describe(v)),
                ),
            }
        }
        if file.use_default && get(table, "path").is_some() {
            self.error(span, "extend", "give useDefault or path, not both");
        }
        if let Some((s, _)) = get(table, "url") {
            self.error(
                s.as_ref(),
                "extend.url",
                "extending a config from a URL is not supported: download it and give its path",
            );
        }
        // `path` itself was followed when the files were read.
        file.disabled = self.strings(table, "disabledRules", "extend");
    }

    fn rule(&mut self, table: &Table, path: &str) -> Option<(RuleSpec, Located)> {
        let span = table.span();
        self.known_keys(
            table,
            path,
            &[
                "id",
                "description",
                "regex",
                "secretGroup",
                "entropy",
                "keywords",
                "tags",
                "path",
                "allowlist",
                "allowlists",
                "required",
                "skipReport",
            ],
        );
        let id = self.string(table, "id", path).unwrap_or_default();
        if id.trim().is_empty() {
            self.error(span.as_ref(), &join(path, "id"), "every rule needs an id");
        }
        let mut rule = RuleSpec {
            id: id.clone(),
            description: self.string(table, "description", path).unwrap_or_default(),
            regex: None,
            ..RuleSpec::default()
        };
        let mut ok = true;
        if get(table, "regex").is_some() {
            rule.regex = self.regex(table, "regex", path);
            ok &= rule.regex.is_some();
        }
        if get(table, "path").is_some() {
            ok &= self.regex(table, "path", path).is_some();
            rule.has_path = true;
        }
        if let Some((s, v)) = get(table, "secretGroup") {
            match v.as_integer().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => rule.secret_group = n,
                None => self.error(
                    s.as_ref(),
                    &join(path, "secretGroup"),
                    format!("expected a group number, found {}", describe(v)),
                ),
            }
        }
        if let (Some(re), true) = (&rule.regex, self.compile && rule.secret_group > 0) {
            let groups = go_regex::builder(re)
                .build()
                .map_or(0, |r| r.captures_len() - 1);
            if rule.secret_group > groups {
                let s = get(table, "secretGroup").and_then(|(s, _)| s);
                self.error(
                    s.as_ref(),
                    &join(path, "secretGroup"),
                    format!(
                        "rule {id:?}: group {} does not exist: its regex has {groups}",
                        rule.secret_group
                    ),
                );
            }
        }
        if let Some((s, v)) = get(table, "entropy") {
            #[expect(
                clippy::cast_precision_loss,
                reason = "entropy thresholds are a few bits"
            )]
            let e = v
                .as_float()
                .or_else(|| v.as_integer().map(|n| n as f64))
                .filter(|e| e.is_finite() && *e >= 0.0);
            match e {
                Some(e) => rule.entropy = e,
                None => self.error(
                    s.as_ref(),
                    &join(path, "entropy"),
                    format!(
                        "expected a number of bits per character (0 or more), found {}",
                        describe(v)
                    ),
                ),
            }
        }
        rule.keywords = self
            .strings(table, "keywords", path)
            .into_iter()
            .filter(|k| !k.is_empty())
            .map(|k| k.to_lowercase())
            .collect();
        rule.tags = self.strings(table, "tags", path);
        rule.skip_report = get(table, "skipReport").is_some_and(|(_, v)| v.as_bool() == Some(true));
        let old = get(table, "allowlist");
        let new = get(table, "allowlists");
        if let (Some((s, _)), Some(_)) = (&old, &new) {
            self.error(
                s.as_ref(),
                &join(path, "allowlist"),
                "[rules.allowlist] is the older form of [[rules.allowlists]]: use one or the other",
            );
        }
        for (s, item, key) in old
            .map(|(s, i)| (s, i, "allowlist"))
            .into_iter()
            .chain(new.map(|(s, i)| (s, i, "allowlists")))
        {
            for (t, key, t_span) in self.tables(item, s.as_ref(), &join(path, key)) {
                match self.allowlist(t, t_span.as_ref(), &key, false) {
                    Some(a) => rule.allowlists.push(a),
                    None => ok = false,
                }
            }
        }
        let at = self.at(span.as_ref(), path);
        (ok && !id.trim().is_empty()).then_some((rule, at))
    }

    fn allowlist(
        &mut self,
        table: &dyn TableLike,
        span: Option<&Range<usize>>,
        path: &str,
        global: bool,
    ) -> Option<AllowlistSpec> {
        let mut known = vec![
            "description",
            "condition",
            "regexTarget",
            "regexes",
            "stopwords",
            "paths",
            "commits",
        ];
        if global {
            known.push("targetRules");
        }
        self.known_keys(table, path, &known);
        let mut a = AllowlistSpec::default();
        let mut ok = true;
        if let Some(c) = self.string(table, "condition", path) {
            match c.to_ascii_uppercase().as_str() {
                "" | "OR" | "||" => a.condition = Condition::Or,
                "AND" | "&&" => a.condition = Condition::And,
                _ => {
                    let s = get(table, "condition").and_then(|(s, _)| s);
                    self.error(
                        s.as_ref(),
                        &join(path, "condition"),
                        format!("{c:?} is not one of OR, AND"),
                    );
                    ok = false;
                }
            }
        }
        if let Some(t) = self.string(table, "regexTarget", path) {
            match t.as_str() {
                "" | "secret" => a.target = Target::Secret,
                "match" => a.target = Target::Match,
                "line" => a.target = Target::Line,
                _ => {
                    let s = get(table, "regexTarget").and_then(|(s, _)| s);
                    self.error(
                        s.as_ref(),
                        &join(path, "regexTarget"),
                        format!("{t:?} is not one of secret, match, line"),
                    );
                    ok = false;
                }
            }
        }
        if let Some((s, item)) = get(table, "regexes") {
            let key = join(path, "regexes");
            let spans: Vec<Option<Range<usize>>> = item
                .as_array()
                .map(|a| a.iter().map(|v| v.span().or_else(|| s.clone())).collect())
                .unwrap_or_default();
            for (i, go) in self.strings(table, "regexes", path).into_iter().enumerate() {
                let span = spans.get(i).cloned().unwrap_or_else(|| s.clone());
                match self.translate(&go, span.as_ref(), &format!("{key}[{i}]")) {
                    Some(re) => a.regexes.push(re),
                    None => ok = false,
                }
            }
        }
        a.stopwords = self
            .strings(table, "stopwords", path)
            .into_iter()
            .map(|w| w.to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        let paths = self.strings(table, "paths", path);
        let commits = self.strings(table, "commits", path);
        a.file_checks = !paths.is_empty() || !commits.is_empty();
        if a.regexes.is_empty() && a.stopwords.is_empty() && !a.file_checks && ok {
            self.error(
                span,
                path,
                "an allowlist needs at least one of: regexes, stopwords, paths, commits",
            );
            ok = false;
        }
        ok.then_some(a)
    }
}

fn rule_span(table: Option<&Table>) -> Option<Range<usize>> {
    table.and_then(|t| get(t, "id").and_then(|(s, _)| s).or_else(|| t.span()))
}

/// `parent.key`, or `key` at the top.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A possibly multi-line message on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
