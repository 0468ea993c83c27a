//! What an edit reports: the keys it changed, what it noticed, and why it refused.
//!
//! Edits in [`crate::containerd`] and [`crate::crio`] never print and never touch the file
//! system. They return an [`Edit`] that says what changed (so that a second run can show it
//! changes nothing) or an [`EditError`] that names the offending key. The caller, which knows
//! the file and its text, turns the key into a line number (see [`crate::patch`]).

use std::fmt;
use std::sync::Arc;

/// A dotted key path into a TOML document, such as `plugins."io.containerd.nri.v1.nri".disable`.
///
/// Segments are shared: a path made by [`KeyPath::join`] holds its parent's segments by
/// reference count, not by copy (an edit of 25,000 runtime tables keeps 25,000 paths under one
/// prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct KeyPath(pub(crate) Vec<Arc<str>>);

impl KeyPath {
    /// Builds a path from its segments.
    pub fn new<I, S>(segments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self(
            segments
                .into_iter()
                .map(|s| Arc::from(s.as_ref()))
                .collect(),
        )
    }

    /// This path with one more segment.
    #[must_use]
    pub fn join(&self, segment: impl AsRef<str>) -> Self {
        let mut segments = Vec::with_capacity(self.0.len() + 1);
        segments.extend(self.0.iter().cloned());
        segments.push(Arc::from(segment.as_ref()));
        Self(segments)
    }

    /// The segments of the path.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        self.0.iter().map(|s| &**s)
    }

    /// How many segments the path has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the path is the root (no segment).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            let segment: &str = segment;
            let bare = !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if bare {
                f.write_str(segment)?;
            } else {
                write!(f, "{segment:?}")?;
            }
        }
        Ok(())
    }
}

/// One change that an edit made to a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key (or a whole table) that was not there was added.
    Inserted {
        /// Where it was added.
        key: KeyPath,
    },
    /// An existing value was replaced.
    Updated {
        /// The key whose value changed.
        key: KeyPath,
        /// The old value, as it was written in the file.
        old: Arc<str>,
        /// The new value, as it is now written (shared when many keys get the same value).
        new: Arc<str>,
    },
    /// Entries were appended to an existing array.
    Extended {
        /// The array's key.
        key: KeyPath,
        /// The entries added, in order.
        added: Vec<String>,
    },
}

impl Change {
    /// The key this change touched.
    pub fn key(&self) -> &KeyPath {
        match self {
            Self::Inserted { key } | Self::Updated { key, .. } | Self::Extended { key, .. } => key,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inserted { key } => write!(f, "added `{key}`"),
            Self::Updated { key, old, new } => write!(f, "set `{key}` from {old} to {new}"),
            Self::Extended { key, added } => {
                let added: Vec<String> = added.iter().map(|a| format!("{a:?}")).collect();
                write!(f, "added {} to `{key}`", added.join(", "))
            }
        }
    }
}

/// The result of one edit: what changed, and what the user should know about.
///
/// An empty `changes` list means the document already had what the edit wants, which is what
/// makes a second run a no-op.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Edit {
    /// The changes made, in the order they were made.
    pub changes: Vec<Change>,
    /// Facts worth telling (for instance why nothing needed changing).
    pub notes: Vec<String>,
    /// Things the edit deliberately left alone that the user may want to look at.
    pub warnings: Vec<String>,
}

impl Edit {
    /// Whether the edit changed nothing.
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }

    /// Keys that the edit is allowed to have changed (used to check the result semantically).
    pub fn touched_keys(&self) -> Vec<&KeyPath> {
        self.changes.iter().map(Change::key).collect()
    }
}

/// An edit that cannot be made because the document has an unexpected shape at `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError {
    /// The key whose value is wrong (used to find the line).
    pub key: KeyPath,
    /// What is wrong, without the file name (for example "is a string, expected a boolean").
    pub message: String,
    /// How to fix it, when there is something to say.
    pub help: Option<String>,
}

impl EditError {
    /// An error about `key`.
    pub fn new(key: KeyPath, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
            help: None,
        }
    }

    /// What is wrong, without the fix: `` `key` message``. `Display` adds `\nhelp: ...` (the
    /// edit reports show it so); [`crate::error::render`] uses this and prints the fix last.
    pub fn message_without_help(&self) -> String {
        format!("`{}` {}", self.key, self.message)
    }

    /// Adds a `help:` line.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message_without_help())?;
        if let Some(help) = &self.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for EditError {}

/// Describes the type of a TOML item for error messages ("a string", "a table", ...).
pub fn describe(item: &toml_edit::Item) -> &'static str {
    use toml_edit::{Item, Value};
    match item {
        Item::None => "missing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "an inline table",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joined_path_equals_the_path_built_whole_and_shares_its_parents_segments() {
        let parent = KeyPath::new(["plugins", "io.containerd.grpc.v1.cri"]);
        let child = parent.join("containerd");
        assert_eq!(
            child,
            KeyPath::new(["plugins", "io.containerd.grpc.v1.cri", "containerd"])
        );
        assert_eq!(
            child.segments().collect::<Vec<_>>(),
            ["plugins", "io.containerd.grpc.v1.cri", "containerd"]
        );
        assert_eq!(
            child.to_string(),
            r#"plugins."io.containerd.grpc.v1.cri".containerd"#
        );
        // Held by reference count, not copied: 25,000 runtime paths under one prefix.
        assert!(Arc::ptr_eq(&parent.0[1], &child.0[1]));
        assert_eq!((parent.len(), child.len()), (2, 3));
        assert!(KeyPath::default().is_empty());
    }

    #[test]
    fn key_path_quotes_only_non_bare_segments() {
        let key = KeyPath::new(["plugins", "io.containerd.nri.v1.nri", "disable"]);
        assert_eq!(
            key.to_string(),
            r#"plugins."io.containerd.nri.v1.nri".disable"#
        );
        assert_eq!(KeyPath::new(["a b", ""]).to_string(), r#""a b"."""#);
    }
}
