//! What the verification keeps of the unedited document: every key's path and value as 128-bit
//! fingerprints, instead of a clone of the document.
//!
//! [`Before::of`] walks the parsed input once, before the edit, into a map of path fingerprint
//! -> (the parent's path fingerprint, the value's fingerprint or "a table"). The document is
//! then edited, rendered and dropped; [`Before::stray`] walks the re-parsed output against the
//! map and returns the keys that changed outside what the edit reports. It decides exactly what
//! [`super::changed_keys`] filtered by the edit's keys decides (the same comparison: values,
//! not formatting; a table and an inline table alike; keys in any order; an empty table that
//! appears or goes away counts; a table that appears counts by its keys), up to a collision of
//! 128-bit fingerprints (two SipHash-1-3 streams), which is as likely as not at all. The names
//! of removed keys are not kept: on a refusal (an internal error) the input is parsed again to
//! name them.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use toml_edit::{Item, TableLike, Value};

use crate::edit::KeyPath;

/// A 128-bit fingerprint.
type Fp = u128;

/// The path of the root table.
const ROOT: Fp = 0;

/// Two SipHash-1-3 streams, salted apart: one 128-bit fingerprint.
struct H(DefaultHasher, DefaultHasher);

impl H {
    fn new(tag: u8) -> Self {
        let mut salted = DefaultHasher::new();
        salted.write_u64(0x9e37_79b9_7f4a_7c15);
        let mut h = Self(DefaultHasher::new(), salted);
        h.u8(tag);
        h
    }

    fn u8(&mut self, x: u8) {
        self.0.write_u8(x);
        self.1.write_u8(x);
    }

    fn u64(&mut self, x: u64) {
        self.0.write_u64(x);
        self.1.write_u64(x);
    }

    fn u128(&mut self, x: Fp) {
        self.0.write_u128(x);
        self.1.write_u128(x);
    }

    fn str(&mut self, s: &str) {
        s.hash(&mut self.0);
        s.hash(&mut self.1);
    }

    fn finish(&self) -> Fp {
        (Fp::from(self.0.finish()) << 64) | Fp::from(self.1.finish())
    }
}

/// The path of `key` in the table at `parent`.
fn child(parent: Fp, key: &str) -> Fp {
    let mut h = H::new(b'k');
    h.u128(parent);
    h.str(key);
    h.finish()
}

/// The path of a key the edit reports.
fn path_of(key: &KeyPath) -> Fp {
    key.segments().iter().fold(ROOT, |p, k| child(p, k))
}

/// A table's value: its keys and their values, in any order, whether it is a table or an inline
/// table (the entries' fingerprints are added up: keys are unique in a table).
fn table_fp(t: &dyn TableLike) -> Fp {
    let mut sum: Fp = 0;
    for (k, item) in t.iter() {
        let mut h = H::new(b'e');
        h.str(k);
        h.u128(item_fp(item));
        sum = sum.wrapping_add(h.finish());
    }
    let mut h = H::new(b'T');
    h.u128(sum);
    h.finish()
}

/// An item's value, as `items_equal` compares them (table-like items as tables).
fn item_fp(item: &Item) -> Fp {
    if let Some(t) = item.as_table_like() {
        return table_fp(t);
    }
    match item {
        Item::Value(v) => value_fp(v),
        Item::ArrayOfTables(a) => {
            let mut h = H::new(b'A');
            h.u64(a.len() as u64);
            for t in a.iter() {
                h.u128(table_fp(t));
            }
            h.finish()
        }
        Item::None | Item::Table(_) => H::new(b'N').finish(),
    }
}

/// A value, as `values_equal` compares them: `0.0` and `-0.0` alike, every NaN alike.
fn value_fp(v: &Value) -> Fp {
    let mut h;
    match v {
        Value::String(s) => {
            h = H::new(b's');
            h.str(s.value());
        }
        Value::Integer(i) => {
            h = H::new(b'i');
            h.u64(*i.value() as u64);
        }
        Value::Float(f) => {
            let x = *f.value();
            h = H::new(b'f');
            if x.is_nan() {
                h.u8(b'n');
            } else if x == 0.0 {
                h.u64(0);
            } else {
                h.u64(x.to_bits());
            }
        }
        Value::Boolean(b) => {
            h = H::new(b'b');
            h.u8(u8::from(*b.value()));
        }
        Value::Datetime(d) => {
            h = H::new(b'd');
            h.str(&d.value().to_string());
        }
        Value::Array(a) => {
            h = H::new(b'a');
            h.u64(a.len() as u64);
            for x in a.iter() {
                h.u128(value_fp(x));
            }
        }
        Value::InlineTable(t) => return table_fp(t),
    }
    h.finish()
}

/// What is kept of one key of the input.
struct Entry {
    /// The path of the table it is in ([`ROOT`] at the top).
    parent: Fp,
    /// `None`: a table (or inline table), `Some(true)` when it is empty; else its value.
    table: Option<bool>,
    /// The value's fingerprint (of a leaf).
    value: Fp,
    /// Met in the output.
    seen: bool,
}

/// The unedited document, as the verification needs it.
pub(super) struct Before {
    entries: HashMap<Fp, Entry>,
}

impl Before {
    /// Walks the (unedited) root table.
    pub(super) fn of(root: &dyn TableLike) -> Self {
        let mut entries = HashMap::new();
        walk(root, ROOT, &mut entries);
        Self { entries }
    }

    /// The keys that differ between the input and `after` (the output's root table) and are not
    /// under a key in `touched`; `original` (the input's text) is parsed again only to name
    /// removed keys when there are any.
    pub(super) fn stray(
        mut self,
        after: &dyn TableLike,
        touched: &[&KeyPath],
        original: &str,
    ) -> Vec<KeyPath> {
        let touched: HashSet<Fp> = touched.iter().map(|k| path_of(k)).collect();
        let mut out = Vec::new();
        compare(
            after,
            ROOT,
            &mut Vec::new(),
            &mut self.entries,
            &touched,
            &mut out,
        );
        // Keys of the input not met in the output: removed, unless under an edited key. A
        // non-empty table is judged by its keys.
        let covered = |mut at: Fp| {
            while at != ROOT {
                if touched.contains(&at) {
                    return true;
                }
                at = self.entries.get(&at).map_or(ROOT, |e| e.parent);
            }
            false
        };
        let removed: HashSet<Fp> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.seen && e.table != Some(false))
            .map(|(fp, _)| *fp)
            .filter(|fp| !covered(*fp))
            .collect();
        if !removed.is_empty() {
            name_removed(original, &removed, &mut out);
        }
        out
    }
}

fn walk(table: &dyn TableLike, at: Fp, entries: &mut HashMap<Fp, Entry>) {
    for (k, item) in table.iter() {
        let fp = child(at, k);
        let sub = item.as_table_like();
        entries.insert(
            fp,
            Entry {
                parent: at,
                table: sub.map(TableLike::is_empty),
                value: if sub.is_some() { 0 } else { item_fp(item) },
                seen: false,
            },
        );
        if let Some(t) = sub {
            walk(t, fp, entries);
        }
    }
}

/// Walks the output, marking what it meets in the input, and lists what changed or was added.
fn compare<'a>(
    table: &'a dyn TableLike,
    at: Fp,
    path: &mut Vec<&'a str>,
    before: &mut HashMap<Fp, Entry>,
    touched: &HashSet<Fp>,
    out: &mut Vec<KeyPath>,
) {
    for (k, item) in table.iter() {
        let fp = child(at, k);
        if touched.contains(&fp) {
            // Anything at or under a key the edit reports may change.
            continue;
        }
        path.push(k);
        let sub = item.as_table_like();
        match (before.get_mut(&fp), sub) {
            (Some(e), Some(t)) if e.table.is_some() => {
                e.seen = true;
                compare(t, fp, path, before, touched, out);
            }
            (Some(e), None) if e.table.is_none() => {
                e.seen = true;
                if e.value != item_fp(item) {
                    out.push(KeyPath::new(path.iter().copied()));
                }
            }
            // A table where a value was, or the reverse.
            (Some(e), _) => {
                e.seen = true;
                out.push(KeyPath::new(path.iter().copied()));
            }
            // Added: a non-empty table by its keys.
            (None, Some(t)) if !t.is_empty() => compare(t, fp, path, before, touched, out),
            (None, _) => out.push(KeyPath::new(path.iter().copied())),
        }
        path.pop();
    }
}

/// Names the input's keys whose paths are in `removed` (walking a new parse of `original`).
fn name_removed(original: &str, removed: &HashSet<Fp>, out: &mut Vec<KeyPath>) {
    fn go<'a>(
        t: &'a dyn TableLike,
        at: Fp,
        path: &mut Vec<&'a str>,
        removed: &HashSet<Fp>,
        out: &mut Vec<KeyPath>,
    ) {
        for (k, item) in t.iter() {
            let fp = child(at, k);
            path.push(k);
            if removed.contains(&fp) {
                out.push(KeyPath::new(path.iter().copied()));
            }
            if let Some(sub) = item.as_table_like() {
                go(sub, fp, path, removed, out);
            }
            path.pop();
        }
    }
    let body = original.strip_prefix(super::BOM).unwrap_or(original);
    match toml_edit::Document::parse(body) {
        Ok(doc) => go(doc.as_table(), ROOT, &mut Vec::new(), removed, out),
        // It parsed before the edit; should it not now, the refusal still stands, unnamed.
        Err(_) => out.push(KeyPath::new(["(a key of the input)"])),
    }
}
