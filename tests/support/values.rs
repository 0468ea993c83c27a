//! TOML values reduced to what they mean, compared independently of the tool's own check.

use std::collections::BTreeMap;

use toml_edit::DocumentMut;

/// A TOML value, reduced to what it means.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A string.
    Str(String),
    Int(i64),
    Float(String),
    Bool(bool),
    Datetime(String),
    Array(Vec<Val>),
    Table(BTreeMap<String, Val>),
}

pub fn from_value(v: &toml_edit::Value) -> Val {
    use toml_edit::Value as V;
    match v {
        V::String(s) => Val::Str(s.value().clone()),
        V::Integer(i) => Val::Int(*i.value()),
        V::Float(f) => Val::Float(f.value().to_string()),
        V::Boolean(b) => Val::Bool(*b.value()),
        V::Datetime(d) => Val::Datetime(d.value().to_string()),
        V::Array(a) => Val::Array(a.iter().map(from_value).collect()),
        V::InlineTable(t) => Val::Table(
            t.iter()
                .map(|(k, v)| (k.to_owned(), from_value(v)))
                .collect(),
        ),
    }
}

pub fn from_item(item: &toml_edit::Item) -> Val {
    use toml_edit::Item as I;
    match item {
        I::None => Val::Table(BTreeMap::new()),
        I::Value(v) => from_value(v),
        I::Table(t) => Val::Table(
            t.iter()
                .map(|(k, v)| (k.to_owned(), from_item(v)))
                .collect(),
        ),
        I::ArrayOfTables(a) => Val::Array(
            a.iter()
                .map(|t| {
                    Val::Table(
                        t.iter()
                            .map(|(k, v)| (k.to_owned(), from_item(v)))
                            .collect(),
                    )
                })
                .collect(),
        ),
    }
}

pub fn parse(text: &str) -> Val {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: DocumentMut = body.parse().unwrap();
    from_item(doc.as_item())
}

/// Paths (as dotted segments) whose values differ, at the leaves.
pub fn differences(
    a: Option<&Val>,
    b: Option<&Val>,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    match (a, b) {
        (Some(Val::Table(x)), Some(Val::Table(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                path.push(k.clone());
                differences(x.get(k), y.get(k), path, out);
                path.pop();
            }
        }
        (None, Some(Val::Table(y))) if !y.is_empty() => {
            for (k, v) in y {
                path.push(k.clone());
                differences(None, Some(v), path, out);
                path.pop();
            }
        }
        (x, y) if x == y => {}
        _ => out.push(path.clone()),
    }
}
