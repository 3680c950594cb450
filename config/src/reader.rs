//! A reader over a spanned TOML tree that tracks key paths, collects every error instead of
//! stopping at the first, and reports keys nobody asked for as unknown.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::ConfigError;
use crate::units::{parse_bytes, parse_duration};

/// The document being read: source text (for line numbers) and the errors found so far.
pub(crate) struct Doc<'i> {
    text: &'i str,
    errors: RefCell<Vec<(usize, ConfigError)>>,
}

impl<'i> Doc<'i> {
    pub(crate) fn new(text: &'i str) -> Self {
        Doc { text, errors: RefCell::new(Vec::new()) }
    }

    /// Records an error at `path`, located at byte offset `span.start`.
    pub(crate) fn error(&self, path: &str, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = if span.start <= self.text.len() && !self.text.is_empty() {
            line_col(self.text, span.start)
        } else {
            (0, 0)
        };
        self.errors.borrow_mut().push((
            span.start,
            ConfigError { path: path.to_string(), line, column, message: message.into() },
        ));
    }

    /// The errors, sorted by position in the text.
    pub(crate) fn take_errors(&self) -> Vec<ConfigError> {
        let mut errors = std::mem::take(&mut *self.errors.borrow_mut());
        errors.sort_by_key(|(pos, _)| *pos);
        errors.into_iter().map(|(_, e)| e).collect()
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }
}

/// Line and column (both from 1; the column in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before, |nl| &before[nl + 1..]).chars().count() + 1;
    (line, column)
}

/// Joins a parent path and a key: `a.b` + `c` = `a.b.c`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// One TOML table being read. Every key read is marked used; [`Table::finish`] reports the rest.
pub(crate) struct Table<'a, 'i> {
    doc: &'a Doc<'i>,
    path: String,
    span: Range<usize>,
    table: &'a DeTable<'i>,
    used: RefCell<BTreeSet<String>>,
}

/// A value with its path and position, for callers that parse it further.
pub(crate) struct Value<'a, 'i> {
    pub(crate) path: String,
    pub(crate) span: Range<usize>,
    pub(crate) value: &'a DeValue<'i>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn new(doc: &'a Doc<'i>, path: String, span: Range<usize>, table: &'a DeTable<'i>) -> Self {
        Table { doc, path, span, table, used: RefCell::new(BTreeSet::new()) }
    }

    pub(crate) fn doc(&self) -> &'a Doc<'i> {
        self.doc
    }

    pub(crate) fn error(&self, key: &str, message: impl Into<String>) {
        let (path, span) = match self.entry(key) {
            Some((_, v)) => (join(&self.path, key), v.span()),
            None => (self.path.clone(), self.span.clone()),
        };
        self.doc.error(&path, span, message);
    }

    fn entry(&self, key: &str) -> Option<(&'a Spanned<toml::de::DeString<'i>>, &'a Spanned<DeValue<'i>>)> {
        self.table.iter().find(|(k, _)| k.get_ref().as_ref() == key)
    }

    /// The raw value under `key`, marking it used.
    pub(crate) fn get(&self, key: &str) -> Option<Value<'a, 'i>> {
        self.used.borrow_mut().insert(key.to_string());
        self.entry(key).map(|(_, v)| Value {
            path: join(&self.path, key),
            span: v.span(),
            value: v.get_ref(),
        })
    }

    fn missing(&self, key: &str, what: &str) {
        self.doc.error(
            &join(&self.path, key),
            self.span.clone(),
            format!("missing required key `{key}` ({what})"),
        );
    }

    fn wrong_type(&self, v: &Value<'_, '_>, expected: &str) {
        self.doc.error(&v.path, v.span.clone(), format!("expected {expected}, found {}", type_name(v.value)));
    }

    pub(crate) fn opt_str(&self, key: &str) -> Option<String> {
        let v = self.get(key)?;
        match v.value.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.wrong_type(&v, "a string");
                None
            }
        }
    }

    pub(crate) fn req_str(&self, key: &str, what: &str) -> Option<String> {
        if self.entry(key).is_none() {
            self.get(key);
            self.missing(key, what);
            return None;
        }
        self.opt_str(key)
    }

    pub(crate) fn opt_u64(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        match integer(v.value) {
            Some(i) if i >= 0 => Some(i as u64),
            Some(_) => {
                self.doc.error(&v.path, v.span.clone(), "must not be negative");
                None
            }
            None => {
                self.wrong_type(&v, "an integer");
                None
            }
        }
    }

    pub(crate) fn req_u64(&self, key: &str, what: &str) -> Option<u64> {
        if self.entry(key).is_none() {
            self.get(key);
            self.missing(key, what);
            return None;
        }
        self.opt_u64(key)
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Option<f64> {
        let v = self.get(key)?;
        let parsed = match v.value {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            other => integer(other).map(|i| i as f64),
        };
        if parsed.is_none() {
            self.wrong_type(&v, "a number");
        }
        parsed
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Option<bool> {
        let v = self.get(key)?;
        let b = v.value.as_bool();
        if b.is_none() {
            self.wrong_type(&v, "true or false");
        }
        b
    }

    /// A string or an array of strings.
    pub(crate) fn opt_str_list(&self, key: &str) -> Option<Vec<String>> {
        let v = self.get(key)?;
        if let Some(s) = v.value.as_str() {
            return Some(vec![s.to_string()]);
        }
        let Some(items) = v.value.as_array() else {
            self.wrong_type(&v, "a string or an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item.get_ref().as_str() {
                Some(s) => out.push(s.to_string()),
                None => {
                    ok = false;
                    self.doc.error(
                        &format!("{}[{i}]", v.path),
                        item.span(),
                        format!("expected a string, found {}", type_name(item.get_ref())),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    /// A size: an integer number of bytes or a string with a unit (`"8MiB"`).
    pub(crate) fn opt_bytes(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        if let Some(i) = integer(v.value)
            && i >= 0
        {
            return Some(i as u64);
        }
        match v.value.as_str().map(parse_bytes) {
            Some(Ok(b)) => Some(b),
            Some(Err(msg)) => {
                self.doc.error(&v.path, v.span.clone(), msg);
                None
            }
            None => {
                self.wrong_type(&v, "a size such as \"8MiB\"");
                None
            }
        }
    }

    /// A duration written with a unit (`"250ms"`).
    pub(crate) fn opt_duration(&self, key: &str) -> Option<Duration> {
        let v = self.get(key)?;
        match v.value.as_str().map(parse_duration) {
            Some(Ok(d)) => Some(d),
            Some(Err(msg)) => {
                self.doc.error(&v.path, v.span.clone(), msg);
                None
            }
            None => {
                self.wrong_type(&v, "a duration such as \"250ms\"");
                None
            }
        }
    }

    /// The sub-table under `key`, if present (an error if it is not a table).
    pub(crate) fn opt_table(&self, key: &str) -> Option<Table<'a, 'i>> {
        let v = self.get(key)?;
        match v.value.as_table() {
            Some(t) => Some(Table::new(self.doc, v.path, v.span, t)),
            None => {
                self.wrong_type(&v, "a table");
                None
            }
        }
    }

    /// Every entry of this table as a named sub-table, in file order (`[source.left]`, ...).
    pub(crate) fn named_tables(&self) -> Vec<(String, Table<'a, 'i>)> {
        let mut out: Vec<(String, Table<'a, 'i>)> = Vec::new();
        for (k, v) in self.table.iter() {
            let name = k.get_ref().to_string();
            self.used.borrow_mut().insert(name.clone());
            let path = join(&self.path, &name);
            match v.get_ref().as_table() {
                Some(t) => out.push((name, Table::new(self.doc, path, v.span(), t))),
                None => self.doc.error(
                    &path,
                    v.span(),
                    format!("expected a table, found {}", type_name(v.get_ref())),
                ),
            }
        }
        out.sort_by_key(|(_, t)| t.span.start);
        out
    }

    /// The keys of this table in file order.
    pub(crate) fn keys_in_order(&self) -> Vec<String> {
        let mut keys: Vec<(usize, String)> =
            self.table.iter().map(|(k, _)| (k.span().start, k.get_ref().to_string())).collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// Position of the value at a dotted path below this table, if it exists.
    pub(crate) fn span_of(&self, dotted: &str) -> Option<Range<usize>> {
        let mut table = self.table;
        let mut span = None;
        for part in dotted.split('.') {
            let (_, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
            span = Some(v.span());
            if let Some(t) = v.get_ref().as_table() {
                table = t;
            }
        }
        span
    }

    /// Reports every key of this table that was never read, listing the expected ones.
    pub(crate) fn finish(&self, expected: &[&str]) {
        let used = self.used.borrow();
        for (k, v) in self.table.iter() {
            let key = k.get_ref().as_ref();
            if !used.contains(key) {
                let hint = if expected.is_empty() {
                    String::new()
                } else {
                    format!("; expected one of: {}", expected.join(", "))
                };
                self.doc.error(
                    &join(&self.path, key),
                    k.span().start..v.span().end,
                    format!("unknown key `{key}`{hint}"),
                );
            }
        }
    }
}

fn integer(v: &DeValue<'_>) -> Option<i64> {
    let DeValue::Integer(i) = v else { return None };
    let digits = i.as_str().replace('_', "");
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, digits.trim_start_matches('+').to_string()),
    };
    let digits =
        digits.trim_start_matches("0x").trim_start_matches("0o").trim_start_matches("0b").to_string();
    let magnitude = i64::from_str_radix(&digits, i.radix()).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("a = 1\nbb = 2", 0), (1, 1));
        assert_eq!(line_col("a = 1\nbb = 2", 6), (2, 1));
        assert_eq!(line_col("a = 1\nbb = 2", 9), (2, 4));
        // Columns count characters; an offset inside a character counts from its start.
        assert_eq!(line_col("a = 1\nä = 2", 10), (2, 4));
        assert_eq!(line_col("ää", 1), (1, 1));
    }

    #[test]
    fn integers_in_every_radix() {
        let t = DeTable::parse("a = 1_000\nb = 0x10\nc = -5\nd = 0b11").expect("parses");
        let get = |k: &str| {
            let (_, v) = t.get_ref().iter().find(|(key, _)| key.get_ref().as_ref() == k).expect("key");
            integer(v.get_ref())
        };
        assert_eq!(get("a"), Some(1000));
        assert_eq!(get("b"), Some(16));
        assert_eq!(get("c"), Some(-5));
        assert_eq!(get("d"), Some(3));
    }
}
