//! Pure edits of cri-o's TOML configuration (`crio.conf` and its `crio.conf.d` drop-ins).
//!
//! cri-o passes a pod's annotations on to a runtime only when that runtime lists them in
//! `allowed_annotations` (see `crio.conf(5)`). [`enable_annotations`] merges names into that
//! list for every runtime table of a file, keeping the list's layout and comments. It does no
//! I/O, and it does not follow drop-in precedence: it edits the file it is given.

use toml_edit::{Array, DocumentMut, Item, Value};

use crate::edit::{Change, Edit, EditError, KeyPath, describe};
use crate::style::{self, Quote};

/// Adds `annotations` to `allowed_annotations` of every `[crio.runtime.runtimes.NAME]` table.
///
/// A missing list is created; an existing one keeps its entries, their order, its comments and
/// its trailing comma, and gets only the names it lacks. A file without any runtime table is an
/// error, since there is nothing to add the names to.
///
/// ```
/// use rthooks::crio::enable_annotations;
/// let mut doc: toml_edit::DocumentMut =
///     "[crio.runtime.runtimes.runc]\nallowed_annotations = [\"a\"]\n".parse().unwrap();
/// let edit = enable_annotations(&mut doc, &["a".into(), "b".into()]).unwrap();
/// assert_eq!(edit.changes.len(), 1);
/// assert!(doc.to_string().contains("[\"a\", \"b\"]"));
/// ```
pub fn enable_annotations(
    doc: &mut DocumentMut,
    annotations: &[String],
) -> Result<Edit, EditError> {
    refuse_other_config(doc)?;
    let mut key = KeyPath::default();
    let mut item = doc.as_item_mut();
    for segment in ["crio", "runtime", "runtimes"] {
        if !item.is_table_like() {
            return Err(not_a_table(&key, item));
        }
        key = key.join(segment);
        let Some(child) = item.as_table_like_mut().and_then(|t| t.get_mut(segment)) else {
            return Err(no_runtimes());
        };
        item = child;
    }
    let runtimes_key = key;
    let Some(runtimes) = item.as_table_like_mut() else {
        return Err(not_a_table(&runtimes_key, item));
    };
    if runtimes.is_empty() {
        return Err(no_runtimes());
    }
    let mut edit = Edit::default();
    let mut values = Values::default();
    for (name, runtime) in runtimes.iter_mut() {
        let runtime_key = runtimes_key.join(name.get());
        if !runtime.is_table_like() {
            return Err(not_a_table(&runtime_key, runtime));
        }
        let quote = runtime
            .as_table_like()
            .map(|t| style::quotes_in(t).strings)
            .unwrap_or_default();
        merge_into(
            runtime,
            &runtime_key,
            annotations,
            quote,
            &mut values,
            &mut edit,
        )?;
    }
    Ok(edit)
}

/// Refuses a file without `crio` tables that is plainly containerd's config (a `version` or
/// `plugins`) or podman's `containers.conf` (`[engine]`, `[containers]`): the fix is another
/// command or another file, not a runtime table.
fn refuse_other_config(doc: &DocumentMut) -> Result<(), EditError> {
    if doc.contains_key("crio") {
        return Ok(());
    }
    if let Some(key) = ["version", "plugins"]
        .into_iter()
        .find(|k| doc.contains_key(k))
    {
        return Err(EditError::new(
            KeyPath::new([key]),
            "is a key of containerd's config: this is a containerd config, not cri-o's",
        )
        .with_help(
            "this command edits cri-o's config (`/etc/crio/crio.conf` or a file in \
             `/etc/crio/crio.conf.d/`); for containerd run `tetragon-oci-hook-setup \
             patch-containerd-conf enable-nri --config-file PATH` (or `add-oci-hook`)",
        ));
    }
    if let Some(key) = ["engine", "containers"]
        .into_iter()
        .find(|k| doc.contains_key(k))
    {
        return Err(EditError::new(
            KeyPath::new([key]),
            "is a table of podman's `containers.conf`, not of cri-o's config",
        )
        .with_help(
            "pass cri-o's config (`/etc/crio/crio.conf` or a file in `/etc/crio/crio.conf.d/`); \
             podman needs no patch: it passes every annotation to the hook",
        ));
    }
    Ok(())
}

fn no_runtimes() -> EditError {
    EditError::new(
        KeyPath::new(["crio", "runtime", "runtimes"]),
        "has no runtime table in this file, so there is no `allowed_annotations` to extend",
    )
    .with_help(
        "patch the file that defines `[crio.runtime.runtimes.NAME]` (cri-o reads \
         /etc/crio/crio.conf, then /etc/crio/crio.conf.d/*; `crio config` shows the result)",
    )
}

fn not_a_table(key: &KeyPath, item: &Item) -> EditError {
    EditError::new(
        key.clone(),
        format!("is {}, expected a table", describe(item)),
    )
    .with_help(format!(
        "`{key}` must be a table; fix or remove that line, then re-run"
    ))
}

/// The string values of the annotations, quoted each way, made once for every runtime (making
/// one parses it: a config with 70,000 runtimes took 140,000 parses).
#[derive(Default)]
struct Values {
    made: Vec<(Quote, String, Value)>,
}

impl Values {
    fn get(&mut self, quote: Quote, s: &str) -> Value {
        if let Some((_, _, v)) = self.made.iter().find(|(q, a, _)| *q == quote && a == s) {
            return v.clone();
        }
        let v = style::value_from_raw(&quote.quote(s)).unwrap_or_else(|| Value::from(s));
        self.made.push((quote, s.to_owned(), v.clone()));
        v
    }
}

fn merge_into(
    runtime: &mut Item,
    runtime_key: &KeyPath,
    annotations: &[String],
    quote: Quote,
    values: &mut Values,
    edit: &mut Edit,
) -> Result<(), EditError> {
    let key = runtime_key.join("allowed_annotations");
    let mut string_value = |s: &str| values.get(quote, s);
    let mut wanted: Vec<&str> = Vec::new();
    for a in annotations {
        if !wanted.contains(&a.as_str()) {
            wanted.push(a);
        }
    }
    let Some(table) = runtime.as_table_like_mut() else {
        return Ok(());
    };
    let Some(current) = table.get_mut("allowed_annotations") else {
        let mut array = Array::new();
        for a in &wanted {
            array.push(string_value(a));
        }
        style::insert_aligned(runtime, "allowed_annotations", Value::Array(array));
        edit.changes.push(Change::Inserted { key });
        return Ok(());
    };
    let Some(array) = current.as_array_mut() else {
        return Err(EditError::new(
            key,
            format!("is {}, expected an array of strings", describe(current)),
        )
        .with_help("write it as `allowed_annotations = [\"name\", ...]`"));
    };
    let mut existing = Vec::with_capacity(array.len());
    for (i, v) in array.iter().enumerate() {
        match v.as_str() {
            Some(s) => existing.push(s.to_owned()),
            None => {
                return Err(EditError::new(
                    key.clone(),
                    format!(
                        "has a non-string entry at index {i} ({})",
                        v.to_string().trim()
                    ),
                )
                .with_help(
                    "every entry of `allowed_annotations` is an annotation name in quotes",
                ));
            }
        }
    }
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|a| !existing.iter().any(|e| e == a))
        .collect();
    if missing.is_empty() {
        edit.notes
            .push(format!("`{key}` already allows {}", annotations.join(", ")));
        return Ok(());
    }
    // New entries copy the spacing of the last one: one per line in a multi-line list
    // (without repeating a comment that sits above it), `, "x"` in a one-line list.
    // The first entry's prefix is the space after `[`, not a separator: in a one-line list of
    // one, separate with a single space.
    let len = array.len();
    let prefix = array.iter().last().map(|last| {
        let p = last
            .decor()
            .prefix()
            .and_then(|p| p.as_str())
            .unwrap_or(" ");
        if p.contains('\n') {
            format!("\n{}", style::indent_of(Some(p)))
        } else if len == 1 {
            " ".to_owned()
        } else {
            p.to_owned()
        }
    });
    let added: Vec<String> = missing.iter().map(|a| (*a).to_owned()).collect();
    for a in missing {
        let mut v = string_value(a);
        match &prefix {
            Some(p) => {
                v.decor_mut().set_prefix(p.clone());
                v.decor_mut().set_suffix("");
                array.push_formatted(v);
            }
            None => array.push(v),
        }
    }
    edit.changes.push(Change::Extended { key, added });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, annotations: &[&str]) -> (String, Edit) {
        let mut doc: DocumentMut = text.parse().unwrap();
        let owned: Vec<String> = annotations.iter().map(|s| s.to_string()).collect();
        let edit = enable_annotations(&mut doc, &owned).unwrap();
        (doc.to_string(), edit)
    }

    #[test]
    fn enable_annotations_keeps_multiline_layout_and_trailing_comma() {
        let (out, _) = run(
            "[crio.runtime.runtimes.crun]\nallowed_annotations = [\n    # traced\n    \"io.containers.trace-syscall\",\n]\n",
            &["io.kubernetes.cri-o.Devices", "io.containers.trace-syscall"],
        );
        insta::assert_snapshot!(out, @r#"
        [crio.runtime.runtimes.crun]
        allowed_annotations = [
            # traced
            "io.containers.trace-syscall",
            "io.kubernetes.cri-o.Devices",
        ]
        "#);
    }

    #[test]
    fn enable_annotations_creates_missing_lists_aligned() {
        let (out, edit) = run(
            "[crio.runtime]\n[crio.runtime.runtimes.runc]\n  runtime_path = \"\"\n[crio.runtime.runtimes.crun]\n  allowed_annotations = []\n",
            &["a", "b", "a"],
        );
        assert_eq!(edit.changes.len(), 2);
        insta::assert_snapshot!(out, @r#"
        [crio.runtime]
        [crio.runtime.runtimes.runc]
          runtime_path = ""
          allowed_annotations = ["a", "b"]
        [crio.runtime.runtimes.crun]
          allowed_annotations = ["a", "b"]
        "#);
    }

    #[test]
    fn each_runtime_gets_its_own_quote_style_though_values_are_made_once() {
        // The value cache is keyed by quote style: a single-quoted runtime after a double-quoted
        // one (and back) still gets single quotes; a name with `'` falls back to double quotes.
        let (out, _) = run(
            "[crio.runtime.runtimes.a]\nruntime_path = '/a'\n\
             [crio.runtime.runtimes.b]\nruntime_path = \"/b\"\n\
             [crio.runtime.runtimes.c]\nruntime_path = '/c'\nallowed_annotations = ['z']\n",
            &["x", "it's"],
        );
        insta::assert_snapshot!(out, @r#"
        [crio.runtime.runtimes.a]
        runtime_path = '/a'
        allowed_annotations = ['x', "it's"]
        [crio.runtime.runtimes.b]
        runtime_path = "/b"
        allowed_annotations = ["x", "it's"]
        [crio.runtime.runtimes.c]
        runtime_path = '/c'
        allowed_annotations = ['z', 'x', "it's"]
        "#);
    }

    #[test]
    fn enable_annotations_is_idempotent() {
        let (out, _) = run("[crio.runtime.runtimes.runc]\n", &["a"]);
        let (again, edit) = run(&out, &["a"]);
        assert_eq!(out, again);
        assert!(edit.is_unchanged());
    }

    #[test]
    fn enable_annotations_errors() {
        for (text, want) in [
            ("[crio.runtime]\n", "has no runtime table"),
            ("crio = 1\n", "`crio` is an integer"),
            (
                "[crio.runtime.runtimes]\nrunc = 1\n",
                "`crio.runtime.runtimes.runc` is an integer",
            ),
            (
                "[crio.runtime.runtimes.runc]\nallowed_annotations = \"a\"\n",
                "is a string, expected an array",
            ),
            (
                "[crio.runtime.runtimes.runc]\nallowed_annotations = [1]\n",
                "non-string entry at index 0",
            ),
        ] {
            let mut doc: DocumentMut = text.parse().unwrap();
            let err = enable_annotations(&mut doc, &["a".into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
