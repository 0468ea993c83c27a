//! Applying a [`Plan`]: each step in order, and on a failure the install and remove steps
//! already applied undone in reverse order.

use super::*;

impl Plan {
    /// Applies every step that changes something, in order, stopping at the first error.
    ///
    /// On an error, the install and remove steps already applied are undone (best effort, in
    /// reverse order) before the error is returned; text writes are not undone.
    pub fn apply(&self) -> anyhow::Result<Vec<Applied>> {
        let mut done = Vec::new();
        let mut undo = Vec::new();
        match self.apply_steps(&mut done, &mut undo) {
            Ok(()) => Ok(done),
            Err(err) => {
                let mut err = err;
                for u in undo.iter().rev() {
                    if let Err(e) = u.run() {
                        err = err.context(format!(
                            "and undoing the change to `{}` failed too: {e:#}",
                            u.path.display()
                        ));
                    }
                }
                Err(err)
            }
        }
    }

    fn apply_steps(&self, done: &mut Vec<Applied>, undo: &mut Vec<Undo>) -> anyhow::Result<()> {
        for step in &self.steps {
            match step {
                Step::Write(w) if w.changes() => {
                    let path = match &w.target {
                        Target::Path(p) => write_in_place(
                            p,
                            Some(w.before.as_bytes()),
                            w.after.as_bytes(),
                            w.template.as_deref(),
                        )?,
                        Target::Exact(p) => {
                            write_exact(p, w.after.as_bytes(), w.template.as_deref())?
                        }
                        Target::New(p) => write_new(p, w.after.as_bytes())?,
                        Target::NewTempFile {
                            dir,
                            prefix,
                            suffix,
                        } => write_new_temp(
                            dir,
                            prefix,
                            suffix,
                            w.after.as_bytes(),
                            w.template.as_deref(),
                        )?,
                    };
                    done.push(Applied::Wrote(path));
                }
                Step::Write(_) => {}
                Step::Install(i) => {
                    if !i.changes() {
                        done.push(Applied::Unchanged(i.path.clone()));
                        continue;
                    }
                    match &i.contents {
                        Contents::Bytes(bytes) => install_bytes(&i.path, bytes, i.mode)?,
                        Contents::Copy(blob) => install_blob(&i.path, blob, i.mode)?,
                    }
                    undo.push(Undo {
                        path: i.path.clone(),
                        restore: i.before.clone(),
                    });
                    done.push(Applied::Wrote(i.path.clone()));
                }
                Step::Remove(r) => {
                    // Read again: the file may have changed since the plan was made (a
                    // daemonized install waits a long time before it removes).
                    let now = r.read_now()?;
                    if now == Current::Absent {
                        done.push(Applied::Absent(r.path.clone()));
                        continue;
                    }
                    if !removable(&now, r.only_if.as_ref()) {
                        done.push(Applied::Kept(r.path.clone()));
                        continue;
                    }
                    // `unlink` removes a symlink itself, never what it points to.
                    fs::remove_file(&r.path)
                        .with_context(|| format!("failed to remove `{}`", r.path.display()))?;
                    sync_dir(&parent_dir(&r.path));
                    undo.push(Undo {
                        path: r.path.clone(),
                        restore: now,
                    });
                    done.push(Applied::Removed(r.path.clone()));
                }
            }
        }
        Ok(())
    }
}

/// How to put a file back as it was before a step.
pub(super) struct Undo {
    path: PathBuf,
    /// What was there.
    restore: Current,
}

impl Undo {
    fn run(&self) -> anyhow::Result<()> {
        match &self.restore {
            Current::File { bytes, mode } => install_bytes(&self.path, bytes, *mode),
            // Held open since it was looked at: the old inode, even once replaced or unlinked.
            Current::Binary { held, mode, .. } => install_blob(&self.path, held, *mode),
            Current::Symlink { target } => restore_symlink(&self.path, target),
            Current::Absent => match fs::remove_file(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => {
                    Err(e).with_context(|| format!("failed to remove `{}`", self.path.display()))
                }
            },
            Current::Large { size } => bail!(
                "`{}` (a {size}-byte file, over the bound read back) cannot be restored",
                self.path.display()
            ),
            Current::Special { kind } => {
                bail!("`{}` ({kind}) cannot be restored", self.path.display())
            }
        }
    }
}

/// Puts a symlink `path` -> `target` back: made under a temporary name, renamed over `path`.
pub(super) fn restore_symlink(path: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.{}.link.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .and_then(|()| fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("failed to restore the symlink `{}`", path.display()))?;
    sync_dir(&dir);
    Ok(())
}
