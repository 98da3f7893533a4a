//! The `systemctl` calls of a switch: their order, whether they run for real, running them.

use std::path::Path;

use super::Root;
use super::units::UnitAction;
use crate::unit_name::shell_line;

/// The systemctl invocations for `actions`, in the order they run: stop removed units before
/// the flip (their unit files still exist), then after it daemon-reload, stop changed services
/// behind sockets, restart and reload changed units, start new ones (see
/// [`UnitAction::phase`]). Enablement is never a systemctl call: the generation carries its
/// `[Install]` links (see [`crate::install`]).
pub fn systemctl_commands(actions: &[UnitAction]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let (stops, mut rest): (Vec<&UnitAction>, Vec<&UnitAction>) = actions
        .iter()
        .partition(|a| matches!(a, UnitAction::Stop { .. }));
    let before = stops.iter().flat_map(|a| a.commands()).collect();
    rest.sort_by_key(|a| a.phase());
    let mut after = vec![vec!["daemon-reload".to_owned()]];
    after.extend(rest.iter().flat_map(|a| a.commands()));
    (before, after)
}

/// Whether unit actions can be run for real: the root is `/` and systemd is running.
pub fn systemd_is_live(root: &Root) -> bool {
    root.dir() == Path::new("/") && Path::new("/run/systemd/system").is_dir()
}

/// A `systemctl` call of a switch that failed, as the systemctl layer saw it: which unit it
/// acted on comes from the call itself, never from its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionFailure {
    /// The arguments (`["restart", "etcd.service"]`).
    pub args: Vec<String>,
    /// The unit the call acted on (`None` for `daemon-reload`).
    pub unit: Option<String>,
    /// How it failed.
    pub how: Failed,
}

/// How a `systemctl` call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failed {
    /// It ran and exited with this status (`exit status: 1`).
    Exited(String),
    /// It could not be run (the OS's words).
    NotRun(String),
}

impl std::fmt::Display for ActionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = shell_line(&self.args);
        match &self.how {
            Failed::Exited(status) => {
                write!(f, "`systemctl {line}` exited with {status}")?;
                // Where to look: the unit's journal (a start that fails says why only there).
                if let Some(unit) = &self.unit {
                    write!(
                        f,
                        " (see `journalctl -u {}`)",
                        shell_line(std::slice::from_ref(unit))
                    )?;
                }
                Ok(())
            }
            Failed::NotRun(e) => write!(f, "cannot run `systemctl {line}`: {e}"),
        }
    }
}

/// Runs `systemctl` for the unit actions of one phase (`before` the flip, or after it), each
/// call to its end whatever the others did. Returns the calls that failed, in order.
pub fn run_systemctl(actions: &[UnitAction], before: bool) -> Vec<ActionFailure> {
    let (stops, rest) = systemctl_commands(actions);
    let mut failures = Vec::new();
    for args in if before { stops } else { rest } {
        let how = match std::process::Command::new("systemctl").args(&args).status() {
            Ok(s) if s.success() => continue,
            Ok(s) => Failed::Exited(s.to_string()),
            Err(e) => Failed::NotRun(e.to_string()),
        };
        // Every call but daemon-reload is `VERB UNIT` (see `UnitAction::commands`).
        let unit = match args.as_slice() {
            [_, unit] => Some(unit.clone()),
            _ => None,
        };
        failures.push(ActionFailure { args, unit, how });
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_names_its_unit_and_journal() {
        let f = |args: &[&str], how: Failed| ActionFailure {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            unit: args.get(1).map(|u| (*u).to_owned()),
            how,
        };
        assert_eq!(
            f(
                &["restart", "etcd.service"],
                Failed::Exited("exit status: 1".into())
            )
            .to_string(),
            "`systemctl restart etcd.service` exited with exit status: 1 (see `journalctl -u etcd.service`)"
        );
        assert_eq!(
            f(&["daemon-reload"], Failed::Exited("exit status: 1".into())).to_string(),
            "`systemctl daemon-reload` exited with exit status: 1"
        );
        assert_eq!(
            f(
                &["start", "kb-mnt\\x2ddata.service"],
                Failed::NotRun("No such file or directory (os error 2)".into())
            )
            .to_string(),
            "cannot run `systemctl start 'kb-mnt\\x2ddata.service'`: No such file or directory (os error 2)"
        );
    }
}
