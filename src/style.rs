//! Reading a document's own formatting so that what we add looks like what is there.
//!
//! containerd configs come indented (`containerd config default` in 1.x indents two spaces a
//! level), flush-left (kind, EKS nodeadm) or with single-quoted keys (containerd 2.x docs, EKS).
//! New keys and tables copy the indentation and quote style of their neighbours.

use toml_edit::{Decor, Item, Key, Table, TableLike, Value};

/// The whitespace at the start of the last line of a decor prefix (the indentation), dropping
/// any comment lines and blank lines before it.
pub fn indent_of(prefix: Option<&str>) -> &str {
    let prefix = prefix.unwrap_or("");
    let last = prefix.rsplit('\n').next().unwrap_or("");
    if last.chars().all(|c| c == ' ' || c == '\t') {
        last
    } else {
        ""
    }
}

/// The indentation of the first plain key/value line in `table`, if it has one.
pub fn key_indent(table: &dyn TableLike) -> Option<String> {
    table.iter().find_map(|(k, item)| {
        if !item.is_value() {
            return None;
        }
        let key = table.key(k)?;
        Some(indent_of(key.leaf_decor().prefix().and_then(|p| p.as_str())).to_owned())
    })
}

/// Which quote a document uses for keys or strings that need quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quote {
    /// `"basic"` strings: the TOML default.
    #[default]
    Double,
    /// `'literal'` strings.
    Single,
}

impl Quote {
    /// Quotes `s` in this style, falling back to a basic string when a literal one cannot hold it.
    pub fn quote(self, s: &str) -> String {
        match self {
            Self::Single if !s.contains('\'') && !s.contains('\n') => format!("'{s}'"),
            _ => {
                let mut out = String::with_capacity(s.len() + 2);
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        '\r' => out.push_str("\\r"),
                        c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                        c => out.push(c),
                    }
                }
                out.push('"');
                out
            }
        }
    }

    fn of_raw(raw: &str) -> Option<Self> {
        if raw.starts_with('\'') {
            Some(Self::Single)
        } else if raw.starts_with('"') {
            Some(Self::Double)
        } else {
            None
        }
    }
}

/// The quote styles found in part of a document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotes {
    /// The style of the first quoted key.
    pub keys: Quote,
    /// The style of the first string value.
    pub strings: Quote,
}

/// Finds the quote style of the first quoted key and the first string value under `table`
/// (depth first, stopping as soon as both are known, so it stays cheap on large files).
pub fn quotes_in(table: &dyn TableLike) -> Quotes {
    let mut keys = None;
    let mut strings = None;
    visit_quotes(table, &mut keys, &mut strings, 0);
    Quotes {
        keys: keys.unwrap_or_default(),
        strings: strings.unwrap_or_default(),
    }
}

fn visit_quotes(
    table: &dyn TableLike,
    keys: &mut Option<Quote>,
    strings: &mut Option<Quote>,
    depth: usize,
) {
    // Real configs are a few levels deep; the cap only guards against pathological input.
    if depth > 64 {
        return;
    }
    for (k, item) in table.iter() {
        if keys.is_some() && strings.is_some() {
            return;
        }
        if keys.is_none() {
            if let Some(q) = table
                .key(k)
                .and_then(Key::as_repr)
                .and_then(|r| r.as_raw().as_str())
                .and_then(Quote::of_raw)
            {
                *keys = Some(q);
            }
        }
        match item {
            Item::Value(Value::String(s)) if strings.is_none() => {
                if let Some(q) = s
                    .as_repr()
                    .and_then(|r| r.as_raw().as_str())
                    .and_then(Quote::of_raw)
                {
                    *strings = Some(q);
                }
            }
            _ => {
                if let Some(t) = item.as_table_like() {
                    visit_quotes(t, keys, strings, depth + 1);
                }
            }
        }
    }
}

/// Sets a value in place, keeping the spacing and comment around the old one.
pub fn replace_value(item: &mut Item, mut new: Value) {
    if let Some(old) = item.as_value() {
        *new.decor_mut() = old.decor().clone();
    }
    *item = Item::Value(new);
}

/// Parses `raw` (a TOML value as text, such as `'/etc/nri'`) keeping its written form.
pub fn value_from_raw(raw: &str) -> Option<Value> {
    raw.parse::<Value>().ok()
}

/// Inserts `key = value` into a table-like item so that it lines up with the table's other keys.
///
/// In a standard `[table]` the new line takes the indentation of the table's first key; dotted
/// and inline tables keep `toml_edit`'s spacing, which is already theirs.
pub fn insert_aligned(item: &mut Item, key: &str, value: Value) {
    let standard = matches!(item, Item::Table(t) if !t.is_dotted());
    let mut value = value;
    if let Item::Value(Value::InlineTable(t)) = item {
        // `{ a = 1 }`: the space before `}` belongs to the last value; hand it to the new last
        // one, or the comma would land after it (`{ a = 1 , b = 2 }`).
        if let Some((_, last)) = t.iter_mut().last() {
            let suffix = last.decor().suffix().cloned();
            last.decor_mut().set_suffix("");
            if let Some(suffix) = suffix {
                value.decor_mut().set_suffix(suffix);
            }
        }
        value.decor_mut().set_prefix(" ");
    }
    let Some(table) = item.as_table_like_mut() else {
        return;
    };
    let indent = if standard { key_indent(table) } else { None };
    table.insert(key, Item::Value(value));
    if let (Some(indent), Some(mut k)) = (indent, table.key_mut(key)) {
        *k.leaf_decor_mut() = Decor::new(indent, " ");
    }
}

/// The largest document position of any table at or below `table`.
pub fn max_position(table: &Table) -> Option<isize> {
    let mut max = table.position();
    for (_, item) in table.iter() {
        let child = match item {
            Item::Table(t) => max_position(t),
            Item::ArrayOfTables(a) => a.iter().filter_map(max_position).max(),
            _ => None,
        };
        max = max.max(child);
    }
    max
}
