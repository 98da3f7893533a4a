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

/// Runs `systemctl` for the unit actions of one phase (`before` the flip, or after it).
/// Returns the failures as readable lines.
pub fn run_systemctl(actions: &[UnitAction], before: bool) -> Vec<String> {
    let (stops, rest) = systemctl_commands(actions);
    let mut failures = Vec::new();
    for args in if before { stops } else { rest } {
        // Where to look: the unit's journal (a start that fails says why only there).
        let see = match args.as_slice() {
            [_, unit] => format!(
                " (see `journalctl -u {}`)",
                shell_line(std::slice::from_ref(unit))
            ),
            _ => String::new(),
        };
        match std::process::Command::new("systemctl").args(&args).status() {
            Ok(s) if s.success() => {}
            Ok(s) => failures.push(format!(
                "`systemctl {}` exited with {s}{see}",
                shell_line(&args)
            )),
            Err(e) => failures.push(format!("cannot run `systemctl {}`: {e}", shell_line(&args))),
        }
    }
    failures
}
