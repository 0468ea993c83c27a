//! NRI's default validator: does the runtime's config reject the OCI hook our NRI plugin adds?
//!
//! containerd 2.2+ and cri-o 1.34+ build in NRI's default validator
//! (`github.com/containerd/nri/plugins/default-validator`). It runs only when enabled, and with
//! `reject_oci_hook_adjustment` it fails every container creation that an NRI plugin adds an
//! OCI hook to, which is exactly what `install --interface nri-hook` does. The keys, read from
//! the runtimes' sources:
//!
//! - containerd (`internal/nri/config.go`, `DefaultValidatorConfig` in the vendored NRI):
//!   `[plugins."io.containerd.nri.v1.nri".default_validator]` `enable` and
//!   `reject_oci_hook_adjustment` (the validator is skipped unless `enable` is true:
//!   `builtin.GetDefaultValidator`);
//! - cri-o (`internal/config/nri/nri.go`): `[crio.nri.default_validator]`
//!   `nri_enable_default_validator` and `nri_validator_reject_oci_hook_adjustment`.
//!
//! Not modelled: NRI's per-role override (`roles.<role>.reject_oci_hook_adjustment` in the
//! validator's config), which can reject (or allow) OCI hooks for plugins of one role only;
//! only the validator-wide key is judged.
//!
//! [`oci_hook_rejection`] takes the config's files in the order the runtime applies them (see
//! [`crate::layers`]); [`containerd_rejection`] takes containerd's effective config (main file
//! and imports, [`crate::effective`]). Neither does I/O.

use std::fmt;

use toml_edit::Item;

use crate::edit::describe;
use crate::effective::{Effective, Setting as EffSetting};
use crate::error::HelpError;
use crate::layers::{Layer, Setting, last_setting};

/// The runtime whose validator is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// containerd 2.2 and later.
    Containerd,
    /// cri-o 1.34 and later.
    Crio,
}

/// The validator's keys for one runtime: (table path, enable key, reject key).
fn keys(
    runtime: Runtime,
) -> (
    &'static [&'static [&'static str]],
    &'static str,
    &'static str,
) {
    match runtime {
        // A version-1 file names the plugin `nri`; containerd 2.x migrates it.
        Runtime::Containerd => (
            &[
                &[
                    "plugins",
                    crate::containerd::NRI_PLUGIN_ID,
                    "default_validator",
                ],
                &["plugins", "nri", "default_validator"],
            ],
            "enable",
            "reject_oci_hook_adjustment",
        ),
        Runtime::Crio => (
            &[&["crio", "nri", "default_validator"]],
            "nri_enable_default_validator",
            "nri_validator_reject_oci_hook_adjustment",
        ),
    }
}

/// A config whose default validator rejects OCI hook adjustments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRejection {
    /// The runtime.
    pub runtime: Runtime,
    /// The reject key, dotted (`plugins."io.containerd.nri.v1.nri".default_validator.
    /// reject_oci_hook_adjustment`).
    pub key: String,
    /// `file:line` of the reject key.
    pub at: String,
    /// `file:line` of the enable key.
    pub enabled_at: String,
}

impl HookRejection {
    /// What goes wrong, naming the key and where it is set.
    pub fn message(&self) -> String {
        let who = match self.runtime {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "cri-o",
        };
        format!(
            "{}: `{} = true` (validator enabled at {}): {who}'s default NRI validator rejects \
             OCI hook adjustments, so every container the tetragon NRI plugin adds its hook to \
             fails to be created",
            self.at, self.key, self.enabled_at
        )
    }

    /// The fix.
    pub fn help(&self) -> String {
        let restart = match self.runtime {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
        };
        format!(
            "set `{} = false` (or remove it) at {}, then restart {restart}; or hook containers \
             without NRI (`install --interface oci-hooks`, or `patch-containerd-conf \
             add-oci-hook` on containerd)",
            self.key.rsplit('.').next().unwrap_or(&self.key),
            self.at
        )
    }
}

impl fmt::Display for HookRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// Whether the effective config (`layers`, in the order the runtime applies them) has the
/// default validator enabled and rejecting OCI hook adjustments. A key of the wrong type is an
/// error naming its file and line (the runtime would refuse that config too).
///
/// ```
/// use rthooks::layers::Layer;
/// use rthooks::nri_validator::{Runtime, oci_hook_rejection};
/// let text = "[crio.nri.default_validator]\nnri_enable_default_validator = true\n\
///             nri_validator_reject_oci_hook_adjustment = true\n";
/// let layers = [Layer::parse("crio.conf", text.to_owned()).unwrap()];
/// let r = oci_hook_rejection(Runtime::Crio, &layers).unwrap().unwrap();
/// assert_eq!(r.at, "crio.conf:3");
/// ```
pub fn oci_hook_rejection(
    runtime: Runtime,
    layers: &[Layer],
) -> Result<Option<HookRejection>, HelpError> {
    let (tables, enable_key, reject_key) = keys(runtime);
    for table in tables {
        let key = |k: &'static str| {
            let mut path = table.to_vec();
            path.push(k);
            path
        };
        let enable = last_setting(layers, &key(enable_key));
        let reject = last_setting(layers, &key(reject_key));
        let (Some(enable), Some(reject)) = (enable, reject) else {
            continue;
        };
        if bool_of(&enable, table, enable_key)? && bool_of(&reject, table, reject_key)? {
            return Ok(Some(HookRejection {
                runtime,
                key: dotted(table, reject_key),
                at: reject.to_string(),
                enabled_at: enable.to_string(),
            }));
        }
    }
    Ok(None)
}

/// Like [`oci_hook_rejection`] for containerd, on its effective config: the main file and its
/// imports merged (the validator exists only in containerd 2.2+, whose rule merges key by key),
/// so a validator enabled in an imported drop-in counts, named by its file and line.
pub fn containerd_rejection(eff: &Effective) -> Result<Option<HookRejection>, HelpError> {
    let table = ["plugins", eff.nri_plugin(), "default_validator"];
    let (enable_key, reject_key) = ("enable", "reject_oci_hook_adjustment");
    let get = |k: &str| eff.get(&[table[0], table[1], table[2], k]);
    let bool_at = |s: &EffSetting, key: &str| {
        s.as_bool().ok_or_else(|| {
            HelpError::new(
                format!(
                    "{}: `{}` is {}, expected a boolean",
                    s.origin,
                    dotted(&table, key),
                    describe(&Item::Value(s.value.clone()))
                ),
                format!("write `{key} = true` or `{key} = false`"),
            )
        })
    };
    let (Some(enable), Some(reject)) = (get(enable_key), get(reject_key)) else {
        return Ok(None);
    };
    if bool_at(enable, enable_key)? && bool_at(reject, reject_key)? {
        return Ok(Some(HookRejection {
            runtime: Runtime::Containerd,
            key: dotted(&table, reject_key),
            at: reject.origin.to_string(),
            enabled_at: enable.origin.to_string(),
        }));
    }
    Ok(None)
}

fn dotted(table: &[&str], key: &str) -> String {
    let mut path = crate::edit::KeyPath::new(table.iter().copied());
    path = path.join(key);
    path.to_string()
}

fn bool_of(setting: &Setting<'_>, table: &[&str], key: &str) -> Result<bool, HelpError> {
    setting.item.as_bool().ok_or_else(|| {
        HelpError::new(
            format!(
                "{setting}: `{}` is {}, expected a boolean",
                dotted(table, key),
                describe(setting.item)
            ),
            format!("write `{key} = true` or `{key} = false`"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(files: &[(&str, &str)]) -> Vec<Layer> {
        files
            .iter()
            .map(|(p, t)| Layer::parse(*p, (*t).to_owned()).unwrap())
            .collect()
    }

    #[test]
    fn containerd_rejection_needs_enable_and_reject() {
        let on = "[plugins.\"io.containerd.nri.v1.nri\".default_validator]\n  enable = true\n  \
                  reject_oci_hook_adjustment = true\n";
        let r = oci_hook_rejection(Runtime::Containerd, &layers(&[("c.toml", on)]))
            .unwrap()
            .unwrap();
        assert_eq!(r.at, "c.toml:3");
        assert_eq!(r.enabled_at, "c.toml:2");
        assert_eq!(
            r.key,
            "plugins.\"io.containerd.nri.v1.nri\".default_validator.reject_oci_hook_adjustment"
        );
        let off = on.replace("enable = true", "enable = false");
        assert_eq!(
            oci_hook_rejection(Runtime::Containerd, &layers(&[("c.toml", &off)])).unwrap(),
            None
        );
    }

    #[test]
    fn later_file_turning_reject_off_wins() {
        let files = [
            (
                "crio.conf",
                "[crio.nri.default_validator]\nnri_enable_default_validator = true\n\
                 nri_validator_reject_oci_hook_adjustment = true\n",
            ),
            (
                "crio.conf.d/10.conf",
                "[crio.nri.default_validator]\nnri_validator_reject_oci_hook_adjustment = false\n",
            ),
        ];
        assert_eq!(
            oci_hook_rejection(Runtime::Crio, &layers(&files)).unwrap(),
            None
        );
        assert!(
            oci_hook_rejection(Runtime::Crio, &layers(&files[..1]))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn non_boolean_key_is_an_error_with_its_line() {
        let text = "[crio.nri.default_validator]\nnri_enable_default_validator = \"yes\"\n\
                    nri_validator_reject_oci_hook_adjustment = true\n";
        let err = oci_hook_rejection(Runtime::Crio, &layers(&[("x.conf", text)])).unwrap_err();
        assert_eq!(
            err.message,
            "x.conf:2: `crio.nri.default_validator.nri_enable_default_validator` is a string, \
             expected a boolean"
        );
    }
}
