//! What the verification keeps of the unedited document: every key's path and value as 128-bit
//! fingerprints, instead of a clone of the document.
//!
//! [`Before::of`] walks the parsed input once, before the edit, into its keys in walk order
//! (the value's fingerprint or "a table", and where the keys under it end) and their path
//! fingerprints sorted for lookup: 48 bytes a key, where a clone of the document took about
//! five times the text. The document is then edited, rendered and dropped; [`Before::stray`]
//! walks the re-parsed output against it and returns the keys that changed outside what the
//! edit reports. It decides exactly what
//! [`super::changed_keys`] filtered by the edit's keys decides (the same comparison: values,
//! not formatting; a table and an inline table alike; keys in any order; an empty table that
//! appears or goes away counts; a table that appears counts by its keys), up to a collision of
//! 128-bit fingerprints (two SipHash-1-3 streams), which is as likely as not at all. The names
//! of removed keys are not kept: on a refusal (an internal error) the input is parsed again to
//! name them.

use std::collections::HashSet;
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
    key.segments().fold(ROOT, child)
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

/// What is kept of one key of the input (24 bytes), in the order of a depth-first walk, so that
/// a table's keys follow it: `end` is where they stop.
struct Entry {
    /// The value's fingerprint (of a leaf; 0 for a table).
    value: [u64; 2],
    /// One past the last entry under it (itself + 1 for a leaf).
    end: u32,
    /// [`LEAF`], [`EMPTY_TABLE`] or [`TABLE`].
    kind: u8,
}

const LEAF: u8 = 0;
const EMPTY_TABLE: u8 = 1;
const TABLE: u8 = 2;

fn split(x: Fp) -> [u64; 2] {
    [(x >> 64) as u64, x as u64]
}

/// The unedited document, as the verification needs it: its keys in walk order, and their
/// paths sorted for lookup (48 bytes a key in all, sized exactly).
pub(super) struct Before {
    entries: Vec<Entry>,
    /// (path, index in `entries`), sorted by path.
    index: Vec<([u64; 2], u32)>,
}

impl Before {
    /// Walks the (unedited) root table.
    pub(super) fn of(root: &dyn TableLike) -> Self {
        let n = count(root);
        let mut before = Self {
            entries: Vec::with_capacity(n),
            index: Vec::with_capacity(n),
        };
        walk(root, ROOT, &mut before);
        before.index.sort_unstable_by_key(|(path, _)| *path);
        before
    }

    fn find(&self, path: Fp) -> Option<usize> {
        let key = split(path);
        self.index
            .binary_search_by_key(&key, |(p, _)| *p)
            .ok()
            .map(|i| self.index[i].1 as usize)
    }

    /// The keys that differ between the input and `after` (the output's root table) and are not
    /// under a key in `touched`; `original` (the input's text) is parsed again only to name
    /// removed keys when there are any.
    pub(super) fn stray(
        self,
        after: &dyn TableLike,
        touched: &[&KeyPath],
        original: &str,
    ) -> Vec<KeyPath> {
        let touched: HashSet<Fp> = touched.iter().map(|k| path_of(k)).collect();
        let mut seen = vec![false; self.entries.len()];
        let mut out = Vec::new();
        let mut cmp = Compare {
            before: &self,
            seen: &mut seen,
            touched: &touched,
            out: &mut out,
        };
        cmp.table(after, ROOT, &mut Vec::new());
        // Keys of the input not met in the output: removed, unless under an edited key. A
        // non-empty table is judged by its keys.
        for fp in &touched {
            if let Some(i) = self.find(*fp) {
                let end = self.entries[i].end as usize;
                seen[i..end].iter_mut().for_each(|s| *s = true);
            }
        }
        let removed: HashSet<[u64; 2]> = self
            .index
            .iter()
            .filter(|(_, i)| {
                let i = *i as usize;
                !seen[i] && self.entries[i].kind != TABLE
            })
            .map(|(path, _)| *path)
            .collect();
        if !removed.is_empty() {
            name_removed(original, &removed, &mut out);
        }
        out
    }
}

/// How many keys `walk` keeps.
fn count(table: &dyn TableLike) -> usize {
    table
        .iter()
        .map(|(_, item)| 1 + item.as_table_like().map_or(0, count))
        .sum()
}

fn walk(table: &dyn TableLike, at: Fp, before: &mut Before) {
    for (k, item) in table.iter() {
        let fp = child(at, k);
        let i = before.entries.len();
        let sub = item.as_table_like();
        before.entries.push(Entry {
            value: match sub {
                Some(_) => [0, 0],
                None => split(item_fp(item)),
            },
            end: 0,
            kind: match sub {
                None => LEAF,
                Some(t) if t.is_empty() => EMPTY_TABLE,
                Some(_) => TABLE,
            },
        });
        before.index.push((split(fp), i as u32));
        if let Some(t) = sub {
            walk(t, fp, before);
        }
        before.entries[i].end = before.entries.len() as u32;
    }
}

/// Walks the output, marking what it meets in the input, and lists what changed or was added.
struct Compare<'b> {
    before: &'b Before,
    seen: &'b mut [bool],
    touched: &'b HashSet<Fp>,
    out: &'b mut Vec<KeyPath>,
}

impl Compare<'_> {
    fn table<'a>(&mut self, table: &'a dyn TableLike, at: Fp, path: &mut Vec<&'a str>) {
        for (k, item) in table.iter() {
            let fp = child(at, k);
            if self.touched.contains(&fp) {
                // Anything at or under a key the edit reports may change.
                continue;
            }
            path.push(k);
            let sub = item.as_table_like();
            let found = self.before.find(fp);
            if let Some(i) = found {
                self.seen[i] = true;
            }
            let entry = found.map(|i| &self.before.entries[i]);
            match (entry, sub) {
                (Some(e), Some(t)) if e.kind != LEAF => self.table(t, fp, path),
                (Some(e), None) if e.kind == LEAF => {
                    if e.value != split(item_fp(item)) {
                        self.out.push(KeyPath::new(path.iter().copied()));
                    }
                }
                // A table where a value was, or the reverse.
                (Some(_), _) => self.out.push(KeyPath::new(path.iter().copied())),
                // Added: a non-empty table by its keys.
                (None, Some(t)) if !t.is_empty() => self.table(t, fp, path),
                (None, _) => self.out.push(KeyPath::new(path.iter().copied())),
            }
            path.pop();
        }
    }
}

/// Names the input's keys whose paths are in `removed` (walking a new parse of `original`).
fn name_removed(original: &str, removed: &HashSet<[u64; 2]>, out: &mut Vec<KeyPath>) {
    fn go<'a>(
        t: &'a dyn TableLike,
        at: Fp,
        path: &mut Vec<&'a str>,
        removed: &HashSet<[u64; 2]>,
        out: &mut Vec<KeyPath>,
    ) {
        for (k, item) in t.iter() {
            let fp = child(at, k);
            path.push(k);
            if removed.contains(&split(fp)) {
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
