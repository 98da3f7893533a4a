//! The health gate: after a switch's unit actions, wait until the units it acted on are
//! `active` and stay so without a restart for the settle time, then run the generation's
//! health checks (see [`crate::health`]); and the root's record of which generation last
//! passed its gate.
//!
//! ```text
//! <root>/etc/.kbuild/health.json
//!   {"version": 1,
//!    "last_good": {"profile": "master-1", "generation": 4},     the rollback target
//!    "pending":   {"profile": "master-1", "generation": 5,      written (fsync'd) before the
//!                  "units": ["kube-apiserver.service"]}}        gate waits; gone once it ends
//! ```
//!
//! The record is written like `state.json` (temp file, fsync, rename, fsync of the
//! directory), so it survives a crash or a reboot. A kbuild killed while waiting leaves
//! `pending`: the next `switch`, `rollback` or `check` says so, and a switch to the same
//! generation (`kbuild switch`) runs its gate again. A switch interrupted after its journal
//! (killed, or failed part-way) keeps its gate pending; the recovery that completes or undoes
//! it makes the record agree with where it leaves the root (see `agreeing`): a gate is
//! pending exactly when the root is on a generation that has not passed it. A generation
//! without checks whose switch succeeded counts as good; a root switched before gates existed
//! (no record) counts its active generation as good. Not run without a live systemd: a gate
//! never reports "passed" for checks it did not run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::root::{Root, read_json, write_json};
use super::systemctl::ActionFailure;
use super::{Applied, Choice, Plan, Recovered, Session, SwitchError, Target};
use crate::health::{Check, Outcome};

/// The record's file name in the root's state directory.
const FILE: &str = "health.json";

/// A generation of a profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRef {
    pub profile: String,
    pub generation: u64,
}

/// A gate that started and has not ended (the kbuild running it was killed, or is running).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub profile: String,
    pub generation: u64,
    /// The units the gate waits for (those the switch started, restarted or reloaded, and
    /// those with checks).
    pub units: Vec<String>,
    /// Units the switch try-restarted (services a timer or path unit starts): waited for
    /// only when they are running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub if_running: Vec<String>,
}

/// `etc/.kbuild/health.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// The generation that last passed its gate (or switched without checks).
    pub last_good: Option<GenerationRef>,
    /// A gate that has not ended.
    pub pending: Option<Pending>,
}

fn path(root: &Root) -> PathBuf {
    root.state_dir().join(FILE)
}

/// The root's health record; `None` when it has none (never gated, or switched before gates).
/// Errors: the file cannot be read or parsed, or records another version than 1.
pub fn record(root: &Root) -> Result<Option<Record>, SwitchError> {
    root.check_state_dir()?;
    let r: Option<Record> = read_json(&path(root))?;
    match r {
        Some(r) if r.version != 1 => Err(SwitchError::HealthVersion {
            path: path(root),
            found: r.version,
        }),
        r => Ok(r),
    }
}

fn write(root: &Root, r: &Record) -> Result<(), SwitchError> {
    root.ensure_state_dir()?;
    write_json(&path(root), r)?;
    crate::fs::fsync_dir(&root.state_dir())?;
    Ok(())
}

/// The generation a failed gate goes back to: the record's last good one; for a root with no
/// record (switched before gates existed), `before`, the generation it was on before the
/// switch that failed.
pub fn last_good(
    root: &Root,
    before: Option<GenerationRef>,
) -> Result<Option<GenerationRef>, SwitchError> {
    Ok(match record(root)? {
        Some(r) => r.last_good,
        None => before,
    })
}

/// Records that the gate of `g` starts, waiting for `units`: written before waiting, so a
/// kbuild killed meanwhile leaves a trace the next command finds.
pub fn begin(
    root: &Root,
    g: &GenerationRef,
    units: &GateUnits,
    before: Option<GenerationRef>,
) -> Result<(), SwitchError> {
    let mut r = record(root)?.unwrap_or_else(|| Record {
        last_good: before,
        ..Record::default()
    });
    r.version = 1;
    let pending = Some(Pending {
        profile: g.profile.clone(),
        generation: g.generation,
        units: units.units.clone(),
        if_running: units.if_running.clone(),
    });
    // An interrupt from here on leaves the gate pending: the handler says so.
    let back = match &r.last_good {
        Some(b) if b != g => format!(
            ", `kbuild switch --profile {} {}` goes back to generation {}, the last that passed its gate",
            b.profile, b.generation, b.generation
        ),
        _ => String::new(),
    };
    crate::interrupt::set_left(Some(format!(
        "generation {n} ({p}) is active and its health gate did not finish (recorded as pending): `kbuild switch --profile {p} {n}` runs the gate again{back}",
        n = g.generation,
        p = g.profile
    )));
    if r.pending == pending && r.version == 1 {
        return Ok(());
    }
    r.pending = pending;
    write(root, &r)?;
    // A crash here leaves a gate pending and no journal: the next switch ends it (`agree`).
    super::fault::point("health gate recorded as pending");
    Ok(())
}

/// Records that `g` is good (its gate passed, or it has no checks and its switch succeeded).
pub fn mark_good(root: &Root, g: &GenerationRef) -> Result<(), SwitchError> {
    crate::interrupt::set_left(None);
    let r = Record {
        version: 1,
        last_good: Some(g.clone()),
        pending: None,
    };
    if record(root)?.as_ref() == Some(&r) {
        return Ok(());
    }
    write(root, &r)
}

/// Ends a pending gate without marking its generation good (it failed and was kept, or the
/// root went elsewhere). `before` is the last good generation when the root has no record yet.
pub fn end_pending(root: &Root, before: Option<GenerationRef>) -> Result<(), SwitchError> {
    crate::interrupt::set_left(None);
    let r = match record(root)? {
        Some(r) if r.pending.is_none() => return Ok(()),
        Some(r) => r,
        None => Record {
            last_good: before,
            ..Record::default()
        },
    };
    write(
        root,
        &Record {
            version: 1,
            pending: None,
            ..r
        },
    )
}

/// A unit as `systemctl show` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnitState {
    pub unit: String,
    pub active: String,
    pub sub: String,
    pub restarts: u64,
    /// `Type=` (`simple`, `notify`, `oneshot`, …).
    #[serde(skip)]
    pub kind: String,
    /// `RemainAfterExit=`.
    #[serde(skip)]
    pub remain: bool,
    /// `Result=` of its last run (`success`, `exit-code`, …).
    #[serde(skip)]
    pub result: String,
}

impl UnitState {
    /// A `Type=oneshot` service without `RemainAfterExit=yes` that ran and succeeded: it is
    /// `inactive` by design once done, and that is its healthy state.
    pub fn ran_once(&self) -> bool {
        self.kind == "oneshot" && !self.remain && self.at_rest()
    }

    /// Not running and not failed (`inactive`, last run successful or never run).
    fn at_rest(&self) -> bool {
        self.active == "inactive" && self.result == "success"
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ActiveState={} SubState={} NRestarts={}",
            self.active, self.sub, self.restarts
        )
    }
}

/// Asks systemd: `systemctl show -p ActiveState,SubState,NRestarts,Type,RemainAfterExit,Result
/// UNIT`. Errors: systemctl could not run or exited non-zero (its stderr), or did not report
/// the unit's state.
pub fn unit_state(unit: &str) -> Result<UnitState, String> {
    let o = std::process::Command::new("systemctl")
        .args([
            "show",
            "-p",
            "ActiveState,SubState,NRestarts,Type,RemainAfterExit,Result",
            "--",
            unit,
        ])
        .output()
        .map_err(|e| format!("cannot run `systemctl show {unit}`: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "`systemctl show {unit}` exited with {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let active = get("ActiveState")
        .ok_or_else(|| format!("`systemctl show {unit}` reported no ActiveState"))?;
    Ok(UnitState {
        unit: unit.to_owned(),
        active,
        sub: get("SubState").unwrap_or_default(),
        restarts: get("NRestarts").and_then(|n| n.parse().ok()).unwrap_or(0),
        kind: get("Type").unwrap_or_default(),
        remain: get("RemainAfterExit").as_deref() == Some("yes"),
        result: get("Result").unwrap_or_default(),
    })
}

/// The last 20 lines of a unit's journal since `since` (`journalctl -u UNIT --no-pager -n 20
/// --since @EPOCH`: this switch's lines, not an older generation's), or why they could not
/// be read.
pub fn journal_tail(unit: &str, since: std::time::SystemTime) -> String {
    let epoch = since
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match std::process::Command::new("journalctl")
        .args(["-u", unit, "--no-pager", "-n", "20", "--since"])
        .arg(format!("@{epoch}"))
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => format!(
            "(journalctl exited with {}: {})\n",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("(cannot run journalctl: {e})\n"),
    }
}

/// Why a gate failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Unit actions failed (`systemctl start` exited non-zero), as the systemctl layer
    /// reported them.
    Actions(Vec<ActionFailure>),
    /// A unit did not become active, or kept restarting, within the time.
    Unit { state: UnitState, why: String },
    /// A check did not pass within its timeout.
    Check { check: Check, outcome: Outcome },
    /// systemctl could not say how a unit is.
    Systemctl { error: String },
}

impl Failure {
    /// The units whose journal explains the failure.
    pub fn units(&self) -> Vec<String> {
        match self {
            Failure::Actions(failures) => {
                let mut units: Vec<String> = Vec::new();
                for u in failures.iter().filter_map(|f| f.unit.as_ref()) {
                    if !units.contains(u) {
                        units.push(u.clone());
                    }
                }
                units
            }
            Failure::Unit { state, .. } => vec![state.unit.clone()],
            Failure::Check { check, .. } => vec![check.unit.clone()],
            Failure::Systemctl { .. } => Vec::new(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Actions(failures) => {
                let lines: Vec<String> = failures.iter().map(ToString::to_string).collect();
                write!(f, "unit actions failed: {}", lines.join("; "))
            }
            Failure::Unit { state, why } => write!(f, "`{}` {why} ({state})", state.unit),
            Failure::Systemctl { error } => write!(f, "systemd cannot be asked: {error}"),
            // Given up before its timeout: the check could not be tried at all (a `ca`,
            // `cert` or `key` file missing or not PEM), which waiting would not change.
            Failure::Check { check, outcome } if outcome.elapsed < check.timeout() => write!(
                f,
                "health check of `{}` failed: {} could not be tried: {}",
                check.unit,
                check.describe(),
                outcome.answer
            ),
            Failure::Check { check, outcome } => write!(
                f,
                "health check of `{}` failed: {} did not pass within {} ({} attempts); last answer: {}",
                check.unit,
                check.describe(),
                humantime::format_duration(check.timeout()),
                outcome.attempts,
                outcome.answer
            ),
        }
    }
}

/// What a gate found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The units waited for, as last seen.
    pub units: Vec<UnitState>,
    /// The checks run, each with its outcome (none when a unit failed first).
    pub checks: Vec<(Check, Outcome)>,
    pub failure: Option<Failure>,
}

/// The units a gate waits for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateUnits {
    /// Units that must be `active` (or, for a oneshot service, have run successfully): those
    /// the switch started, restarted or reloaded, and those with checks.
    pub units: Vec<String>,
    /// Units the switch try-restarted (services a timer or path unit starts) that are not
    /// among `units`: waited for only when running; `inactive` and not failed passes.
    pub if_running: Vec<String>,
}

impl GateUnits {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.if_running.is_empty()
    }

    /// Every unit, `units` first.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.units.iter().chain(&self.if_running)
    }
}

/// The units a switch's gate waits for: those it started, restarted or reloaded, those the
/// checks belong to, and (only when running) those it try-restarted; after an interrupted
/// gate of the same generation (`pending`), also the units that gate was waiting for. Each
/// once, in that order.
pub fn gate_units(
    actions: &[super::UnitAction],
    checks: &[Check],
    pending: Option<&Pending>,
) -> GateUnits {
    use super::UnitAction as A;
    let mut out = GateUnits::default();
    let acted = actions
        .iter()
        .filter(|a| matches!(a, A::Start { .. } | A::Restart { .. } | A::Reload { .. }))
        .map(|a| a.unit());
    let pending_units = pending.into_iter().flat_map(|p| p.units.iter());
    for u in acted
        .chain(checks.iter().map(|c| c.unit.as_str()))
        .chain(pending_units.map(String::as_str))
    {
        if !out.units.iter().any(|x| x == u) {
            out.units.push(u.to_owned());
        }
    }
    let tried = actions
        .iter()
        .filter(|a| matches!(a, A::TryRestart { .. }))
        .map(|a| a.unit())
        .chain(
            pending
                .into_iter()
                .flat_map(|p| p.if_running.iter().map(String::as_str)),
        );
    for u in tried {
        if !out.all().any(|x| x == u) {
            out.if_running.push(u.to_owned());
        }
    }
    out
}

/// How long the units of a generation without checks must stay `active` without a restart.
pub const UNITS_SETTLE: Duration = Duration::from_secs(1);

/// How long each of `units` must stay `active` without a restart (its settle time), and how
/// long the gate waits for that (its timeout): the longest `settle` and `timeout` of the
/// unit's own checks; [`UNITS_SETTLE`] and [`crate::health::DEFAULT_TIMEOUT`] for a unit
/// without checks. In `units`' order.
pub fn unit_times(units: &[String], checks: &[Check]) -> Vec<(Duration, Duration)> {
    units
        .iter()
        .map(|u| {
            let mine = || checks.iter().filter(move |c| c.unit == *u);
            (
                mine().map(Check::settle).max().unwrap_or(UNITS_SETTLE),
                mine()
                    .map(Check::timeout)
                    .max()
                    .unwrap_or(crate::health::DEFAULT_TIMEOUT),
            )
        })
        .collect()
}

/// What the gate says it waits for (after `Waiting`): every unit with its own settle time
/// (`times`, as [`unit_times`] gives them, in `units`' order) — once when all are the same:
/// `for a.service, b.service to be active and settle (3s)`; else each after its unit:
/// `for a.service (3s), b.service (1s) to be active and settle`.
pub fn waiting_line(units: &[String], times: &[(Duration, Duration)]) -> String {
    let h = |d: Duration| humantime::format_duration(d).to_string();
    let settles: Vec<Duration> = times.iter().map(|t| t.0).collect();
    match settles.first() {
        Some(first) if settles.iter().all(|s| s == first) => format!(
            "for {} to be active and settle ({})",
            units.join(", "),
            h(*first)
        ),
        _ => {
            let each: Vec<String> = units
                .iter()
                .zip(settles)
                .map(|(u, s)| format!("{u} ({})", h(s)))
                .collect();
            format!("for {} to be active and settle", each.join(", "))
        }
    }
}

/// Runs the gate on a live systemd: waits until every unit of `units` is `active` with
/// `NRestarts` unchanged for its settle time (see [`unit_times`]) — a oneshot service that
/// ran successfully, and a try-restarted unit at rest, pass as they are — failing at once on
/// `ActiveState=failed` or when systemctl cannot say, and when a unit's timeout has gone by
/// before it settled; then runs every check (concurrently) until it passes or its own timeout
/// ends. `status` hears what it waits for.
pub fn gate(gate_units: &GateUnits, checks: &[Check], status: &dyn Fn(&str)) -> Report {
    let mut report = Report::default();
    let units: Vec<String> = gate_units.all().cloned().collect();
    let times = unit_times(&units, checks);
    let poll = checks
        .iter()
        .map(Check::interval)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    if !units.is_empty() {
        status(&waiting_line(&units, &times));
    }
    let start = Instant::now();
    // Per unit: since when it has been active, and its NRestarts then.
    let mut since: Vec<Option<(Instant, u64)>> = vec![None; units.len()];
    // Per unit: whether it is settled as last seen.
    let mut done = vec![false; units.len()];
    loop {
        let now = Instant::now();
        let states: Result<Vec<UnitState>, String> = units.iter().map(|u| unit_state(u)).collect();
        let states = match states {
            Ok(s) => s,
            Err(error) => {
                report.failure = Some(Failure::Systemctl { error });
                return report;
            }
        };
        for (((s, since), done), (settle, _)) in states
            .iter()
            .zip(since.iter_mut())
            .zip(done.iter_mut())
            .zip(&times)
        {
            let if_running = gate_units.if_running.contains(&s.unit);
            if s.ran_once() || (if_running && s.at_rest()) {
                // A oneshot that ran, or a try-restarted unit not running: nothing to wait for.
                *done = true;
            } else if s.active == "active" {
                match since {
                    Some((_, n)) if *n == s.restarts => {}
                    // Restarted since it was seen active: the settle time starts again.
                    _ => *since = Some((now, s.restarts)),
                }
                *done = since.is_some_and(|(t, _)| now - t >= *settle);
            } else {
                *since = None;
                *done = false;
            }
        }
        let settled = done.iter().all(|d| *d);
        let failed = states.iter().find(|s| s.active == "failed").cloned();
        report.units = states;
        if let Some(state) = failed {
            report.failure = Some(Failure::Unit {
                state,
                why: "failed".to_owned(),
            });
            return report;
        }
        if settled {
            break;
        }
        // The first unit still unsettled when its own timeout has gone by.
        let late = report
            .units
            .iter()
            .zip(&since)
            .zip(&done)
            .zip(&times)
            .find(|(((_, _), d), (_, timeout))| !**d && now - start >= *timeout)
            .map(|(((s, t), _), (settle, timeout))| (s.clone(), t.is_some(), *settle, *timeout));
        if let Some((state, stayed, settle, timeout)) = late {
            let why = if stayed {
                format!(
                    "did not stay active without a restart for {} within {}",
                    humantime::format_duration(settle),
                    humantime::format_duration(timeout)
                )
            } else {
                format!(
                    "did not become active within {}",
                    humantime::format_duration(timeout)
                )
            };
            report.failure = Some(Failure::Unit { state, why });
            return report;
        }
        std::thread::sleep(poll);
    }
    if !checks.is_empty() {
        status(&format!(
            "for {} health check{}",
            checks.len(),
            if checks.len() == 1 { "" } else { "s" }
        ));
    }
    report.checks = checks.iter().cloned().zip(run_checks(checks)).collect();
    report.failure = report
        .checks
        .iter()
        .find(|(_, o)| !o.passed)
        .map(|(c, o)| Failure::Check {
            check: c.clone(),
            outcome: o.clone(),
        });
    report
}

/// Runs every check concurrently until it passes or its timeout ends (`kbuild check`, and
/// the gate once its units settled); the outcomes in the checks' order.
pub fn run_checks(checks: &[Check]) -> Vec<Outcome> {
    std::thread::scope(|s| {
        let handles: Vec<_> = checks.iter().map(|c| s.spawn(|| c.run())).collect();
        handles
            .into_iter()
            // A probe that panicked (its HTTP client on odd input) is a failed check, not
            // a kbuild stopped mid-gate after the flip.
            .map(|h| {
                h.join().unwrap_or_else(|_| Outcome {
                    passed: false,
                    answer: "the probe failed unexpectedly (a kbuild bug: please report it)"
                        .to_owned(),
                    attempts: 1,
                    elapsed: Duration::ZERO,
                })
            })
            .collect()
    })
}

/// What a gated switch needs from its caller: the terminal, and the unit actions, which the
/// command line runs (or prints) as for any switch.
pub trait Driver {
    /// A status line (`Pending`, `Waiting`, `Healthy`, `Rolling back`).
    fn status(&self, verb: &str, message: &str);
    /// An interrupted switch was completed or undone first (see [`Session::switch`]).
    fn recovered(&self, r: &Recovered);
    /// The plan is accepted and the root changes next (removed units are stopped here).
    fn before_flip(&self, plan: &Plan);
    /// The switch is applied: runs (or prints) its remaining unit actions and returns every
    /// unit action of this switch that failed (as [`super::run_systemctl`] reports them).
    fn applied(&self, plan: &Plan, applied: &Applied) -> Vec<ActionFailure>;
    /// The gate of `to` ended: every check run with its outcome, and the failure if any.
    fn gated(&self, to: &GenerationRef, report: &Report);
}

/// How a gated switch ended.
#[derive(Debug)]
pub enum Gated {
    /// No gate ran: the root is not live (`not_run`: the generation has checks that were
    /// not run), the generation has no checks, or it is active and passed its gate already.
    /// `failures`: the unit actions that failed.
    Ungated {
        failures: Vec<ActionFailure>,
        not_run: bool,
    },
    /// The gate passed: the generation is recorded as the last good one.
    Passed,
    /// The gate of `to` failed; `end` says where the root is now.
    Failed {
        to: GenerationRef,
        failure: Box<Failure>,
        end: Box<End>,
    },
}

/// Where a failed gate leaves the root.
#[derive(Debug)]
pub enum End {
    /// On the failed generation, as `--no-rollback` asks; `good` is the way back.
    Kept { good: Option<GenerationRef> },
    /// Back on `good`, which passed its gate again.
    RolledBack { good: GenerationRef },
    /// On the failed generation: the root has no other generation that passed a gate.
    NoGood,
    /// On the failed generation: the switch back to `good` was refused or failed.
    BackFailed {
        good: GenerationRef,
        error: Box<SwitchError>,
    },
    /// On `good`, which failed its gate too.
    BackUnhealthy {
        good: GenerationRef,
        failure: Box<Failure>,
    },
}

/// A switch to `target` followed by its health gate (docs/switch.md, "Health gate"): on a
/// live root (`live`), every switch that acts on units or whose generation has checks is
/// gated (units active, then checks), and when the gate fails the root goes back to the last
/// good generation (unless `no_rollback`), whose gate runs again. The gate is recorded as
/// pending (fsync'd) before the root changes, so a kbuild killed at any point after it
/// leaves a gate the next command finds. An interrupted gate of the same generation is run
/// again even when the switch changes nothing. Errors are those of the switch asked for;
/// what happens after it is the [`Gated`].
// The target, profile and flags are separate arguments, as the command line reads them.
#[allow(clippy::too_many_arguments)]
pub fn switch(
    session: &Session,
    target: Target,
    choice: &Choice,
    adopt: bool,
    live: bool,
    no_rollback: bool,
    driver: &dyn Driver,
) -> Result<(Plan, Applied, Gated), SwitchError> {
    let root = session.root();
    if live && let Ok(Some((r, state))) = session.recovery_preview() {
        // What the recovery of an interrupted switch will leave is recorded before it acts
        // (as a switch records its gate before its journal): a kbuild killed in between finds
        // the journal again, and records the same.
        agree(root, &r, &state)?;
    }
    let recovered = session.recover()?;
    if recovered.happened {
        driver.recovered(&recovered);
    }
    if live {
        // And as it went: a recovery whose step failed undoes the switch instead; and a gate
        // of a generation the root is not on (a switch stopped before its journal) is dropped.
        agree(root, &recovered, &root.state()?)?;
    }
    let prior = record(root)?;
    let pending = prior.as_ref().and_then(|r| r.pending.clone());
    if let Some(p) = &pending {
        driver.status("Pending", &pending_message(p));
    }
    // Written once the plan is accepted and before the switch's journal (finding: a kbuild
    // killed between the flip and a later write left no trace, and the next switch counted
    // the unchecked generation as good; and a journal written first, then a failed write
    // here, left a switch that recovery completes with no gate pending).
    let wrote_pending = std::cell::Cell::new(false);
    let before_journal = |p: &Plan| -> Result<(), SwitchError> {
        if live && let Some(n) = p.to.generation {
            let to = GenerationRef {
                profile: p.to.profile_name().to_owned(),
                generation: n,
            };
            let mine = pending
                .as_ref()
                .filter(|q| q.generation == n && q.profile == to.profile);
            let units = gate_units(&p.units, &p.health_checks()?, mine);
            if !units.is_empty() {
                begin(root, &to, &units, generation_before(p))?;
                wrote_pending.set(true);
            }
        }
        Ok(())
    };
    let switched = session.switch(
        target,
        choice,
        adopt,
        &|r| driver.recovered(r),
        &before_journal,
        &|p| {
            driver.before_flip(p);
            Ok(())
        },
    );
    let (plan, applied) = match switched {
        Ok(s) => s,
        Err(e) => {
            crate::interrupt::set_left(None);
            // A switch that failed part-way leaves its journal (the next command completes
            // or undoes it): its gate stays pending, since the recovery may complete it, and
            // is settled by that recovery (`agree`). Without a journal the root did not
            // change: the record is as it was. (Issue 12 follow-up: the record was restored
            // with the journal left, and a recovery that completed the switch left the
            // generation unchecked with no gate pending.)
            let journal_left = !matches!(root.journal(), Ok(None));
            if wrote_pending.get() && !journal_left {
                write(
                    root,
                    &prior.unwrap_or(Record {
                        version: 1,
                        ..Record::default()
                    }),
                )?;
            }
            return Err(e);
        }
    };
    let failures = driver.applied(&plan, &applied);
    let to = GenerationRef {
        profile: plan.to.profile_name().to_owned(),
        generation: applied.generation,
    };
    let checks = plan.health_checks()?;
    if !live {
        // Nothing was run here, so nothing is known of the generation's health: the root's
        // record stays as it is.
        let not_run = !checks.is_empty() && applied.changed_anything;
        return Ok((plan, applied, Gated::Ungated { failures, not_run }));
    }
    let recorded = record(root)?;
    // Without a record (a root switched before gates existed), the generation it was on
    // counts as good — but never the one it is switching to, which has not passed a gate.
    let good = match &recorded {
        Some(r) => r.last_good.clone(),
        None => generation_before(&plan).filter(|g| *g != to),
    };
    // A gate of this generation that a killed kbuild left is run again, its units included.
    let pending = pending.filter(|p| p.generation == to.generation && p.profile == to.profile);
    let units = gate_units(&plan.units, &checks, pending.as_ref());
    if pending.is_none() && failures.is_empty() && units.is_empty() {
        // Nothing to wait for and nothing to check: a switch that completed is good. A
        // gate of another generation left pending is dropped (the root is not on it).
        mark_good(root, &to)?;
        let not_run = false;
        return Ok((plan, applied, Gated::Ungated { failures, not_run }));
    }
    let already_good = recorded.as_ref().and_then(|r| r.last_good.as_ref()) == Some(&to);
    if !applied.changed_anything && pending.is_none() && failures.is_empty() && already_good {
        // Already active and already good.
        end_pending(root, good)?;
        let not_run = false;
        return Ok((plan, applied, Gated::Ungated { failures, not_run }));
    }
    let Some(failure) = gate_one(root, &to, good.clone(), &units, &checks, failures, driver)?
    else {
        return Ok((plan, applied, Gated::Passed));
    };
    let end = if no_rollback {
        end_pending(root, good.clone())?;
        End::Kept { good }
    } else {
        roll_back(session, &to, good, driver)?
    };
    let (failure, end) = (Box::new(failure), Box::new(end));
    Ok((plan, applied, Gated::Failed { to, failure, end }))
}

/// The record `rec` once it agrees with the root being on `now` (none: an unmanaged root)
/// after the recovery `r` of an interrupted switch (none when `r.happened` is false), `checks`
/// being those of `now`: a gate is pending exactly when the root is on a generation that has
/// not passed it.
///
/// - A gate pending for another generation than `now` ends: the root is not on it (its
///   switch was undone, or stopped before its journal). When that switch, stopped before
///   its journal, had replaced a gate pending for `now` (`now` is not the last good
///   generation), `now`'s gate is pending again, waiting for its checks' units.
/// - After a recovery onto `now`, which ran (or undid) unit actions `now` has not been gated
///   on, `now`'s gate is pending — waiting for those units, its checks' and those of a gate of
///   `now` already pending — unless `now` is the last good generation and none was pending.
///   With nothing to wait for, `now` is good, as after a switch with nothing to gate.
fn agreeing(rec: Record, now: Option<&GenerationRef>, r: &Recovered, checks: &[Check]) -> Record {
    let on_now =
        |p: &Pending| now.is_some_and(|g| g.generation == p.generation && g.profile == p.profile);
    let any = rec.pending.is_some();
    let mine = rec.pending.filter(on_now);
    let (last_good, pending) = match now {
        Some(g) if r.happened && (mine.is_some() || rec.last_good.as_ref() != Some(g)) => {
            let units = gate_units(&r.units, checks, mine.as_ref());
            if units.is_empty() {
                (Some(g.clone()), None)
            } else {
                let pending = Pending {
                    profile: g.profile.clone(),
                    generation: g.generation,
                    units: units.units,
                    if_running: units.if_running,
                };
                (rec.last_good, Some(pending))
            }
        }
        Some(g) if !r.happened && mine.is_none() && any && rec.last_good.as_ref() != Some(g) => {
            let units = gate_units(&[], checks, None);
            let pending = (!units.is_empty()).then(|| Pending {
                profile: g.profile.clone(),
                generation: g.generation,
                units: units.units,
                if_running: units.if_running,
            });
            (rec.last_good, pending)
        }
        _ => (rec.last_good, mine),
    };
    Record {
        version: 1,
        last_good,
        pending,
    }
}

/// Makes the root's health record agree with `state`, where the root is after the recovery
/// `r` (or will be: `r` and `state` may be a preview), as [`agreeing`] says; written only
/// when it changes. A root with no record (never gated) is left without one.
fn agree(root: &Root, r: &Recovered, state: &super::State) -> Result<(), SwitchError> {
    let Some(rec) = record(root)? else {
        return Ok(());
    };
    let now = state.generation.map(|n| GenerationRef {
        profile: state.profile_name().to_owned(),
        generation: n,
    });
    // `now`'s checks, read only when its gate may be pending again.
    let elsewhere = rec.pending.as_ref().is_some_and(|p| {
        now.as_ref()
            .is_none_or(|g| g.generation != p.generation || g.profile != p.profile)
    });
    let checks = match state.rootfs.as_deref() {
        Some(rootfs) if r.happened || elsewhere => crate::health::of_rootfs(rootfs)?,
        _ => Vec::new(),
    };
    let agreed = agreeing(rec.clone(), now.as_ref(), r, &checks);
    if agreed != rec {
        write(root, &agreed)?;
    }
    Ok(())
}

/// The generation a plan leaves, if the root was on one.
fn generation_before(plan: &Plan) -> Option<GenerationRef> {
    plan.from.generation.map(|n| GenerationRef {
        profile: plan.from.profile_name().to_owned(),
        generation: n,
    })
}

/// What a command says of a gate a killed kbuild left, and the ways out.
pub fn pending_message(p: &Pending) -> String {
    format!(
        "the health gate of generation {} ({}) was interrupted (kbuild stopped while waiting): it is not marked good; a switch to it runs the gate again, another switch leaves it",
        p.generation, p.profile
    )
}

/// Runs the gate of `to` (recorded as pending first) and records it good when it passed.
/// `failures`: unit actions that failed (the gate then fails at once).
fn gate_one(
    root: &Root,
    to: &GenerationRef,
    good: Option<GenerationRef>,
    units: &GateUnits,
    checks: &[Check],
    failures: Vec<ActionFailure>,
    driver: &dyn Driver,
) -> Result<Option<Failure>, SwitchError> {
    begin(root, to, units, good)?;
    let report = if failures.is_empty() {
        gate(units, checks, &|m| driver.status("Waiting", m))
    } else {
        Report {
            failure: Some(Failure::Actions(failures)),
            ..Report::default()
        }
    };
    driver.gated(to, &report);
    if report.failure.is_none() {
        mark_good(root, to)?;
        let what = if checks.is_empty() {
            "its units are active; no checks".to_owned()
        } else {
            format!(
                "{} check{}",
                checks.len(),
                if checks.len() == 1 { "" } else { "s" }
            )
        };
        driver.status(
            "Healthy",
            &format!(
                "generation {} passed its health gate ({what})",
                to.generation
            ),
        );
    }
    Ok(report.failure)
}

/// After the gate of `to` failed: switches back to `good`, carries out that switch's unit
/// actions and gates it again.
fn roll_back(
    session: &Session,
    to: &GenerationRef,
    good: Option<GenerationRef>,
    driver: &dyn Driver,
) -> Result<End, SwitchError> {
    let root = session.root();
    let Some(good) = good.filter(|g| g != to) else {
        end_pending(root, None)?;
        return Ok(End::NoGood);
    };
    driver.status(
        "Rolling back",
        &format!(
            "to generation {} ({}), the last that passed its health gate",
            good.generation, good.profile
        ),
    );
    let switched = session.switch(
        Target::Number(good.generation),
        &Choice::Profile(good.profile.clone()),
        false,
        &|r| driver.recovered(r),
        &|_| Ok(()),
        &|p| {
            driver.before_flip(p);
            Ok(())
        },
    );
    let (plan, applied) = match switched {
        Ok(s) => s,
        Err(error) => {
            end_pending(root, Some(good.clone()))?;
            return Ok(End::BackFailed {
                good,
                error: Box::new(error),
            });
        }
    };
    let failures = driver.applied(&plan, &applied);
    let checks = plan.health_checks()?;
    let units = gate_units(&plan.units, &checks, None);
    let again = if units.is_empty() && failures.is_empty() {
        mark_good(root, &good)?;
        None
    } else {
        gate_one(
            root,
            &good,
            Some(good.clone()),
            &units,
            &checks,
            failures,
            driver,
        )?
    };
    match again {
        None => Ok(End::RolledBack { good }),
        Some(failure) => {
            end_pending(root, Some(good.clone()))?;
            Ok(End::BackUnhealthy {
                good,
                failure: Box::new(failure),
            })
        }
    }
}

/// What `kbuild check` found on a root.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The active generation.
    pub active: GenerationRef,
    /// Its checks (none: it declares none).
    pub checks: Vec<Check>,
    /// Each check's outcome, in order; empty when the checks were not run (not live).
    pub outcomes: Vec<Outcome>,
    /// The active generation's gate a killed kbuild left, if any.
    pub pending: Option<Pending>,
    /// The last generation that passed its gate (after this check: the active one, when its
    /// checks completed an interrupted gate).
    pub last_good: Option<GenerationRef>,
}

impl Checked {
    /// Whether every check ran and passed.
    pub fn passed(&self) -> bool {
        self.outcomes.len() == self.checks.len() && self.outcomes.iter().all(|o| o.passed)
    }
}

/// Runs the active generation's checks on `root` (`kbuild check`), holding the root's lock:
/// only when `live` (never reported as passed otherwise). A gate of the active generation
/// that a killed kbuild left is said so to `observer`, and checks that all pass complete it
/// (the generation is recorded good). `None`: the root has no active generation.
pub fn check(
    root: &Root,
    live: bool,
    observer: &dyn crate::observe::Observer,
) -> Result<Option<Checked>, SwitchError> {
    let _lock = root.lock(observer)?;
    let state = root.state()?;
    let (Some(generation), Some(rootfs)) = (state.generation, state.rootfs.as_deref()) else {
        return Ok(None);
    };
    let active = GenerationRef {
        profile: state.profile_name().to_owned(),
        generation,
    };
    let checks = crate::health::of_rootfs(rootfs)?;
    let recorded = record(root)?.unwrap_or_default();
    let pending = recorded
        .pending
        .filter(|p| p.generation == generation && p.profile == active.profile);
    if let Some(p) = &pending {
        observer.status(
            "Pending",
            &format!("{}; passing checks complete it", pending_message(p)),
        );
    }
    let outcomes = if live {
        run_checks(&checks)
    } else {
        Vec::new()
    };
    let mut checked = Checked {
        active,
        checks,
        outcomes,
        pending,
        last_good: recorded.last_good,
    };
    if live && checked.pending.is_some() && checked.passed() {
        mark_good(root, &checked.active)?;
        checked.last_good = Some(checked.active.clone());
        observer.status(
            "Healthy",
            &format!("generation {generation} passed its checks: its interrupted gate is complete"),
        );
    }
    Ok(Some(checked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_pending() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(record(&root).unwrap(), None);
        let before = GenerationRef {
            profile: "default".into(),
            generation: 1,
        };
        let g2 = GenerationRef {
            profile: "default".into(),
            generation: 2,
        };
        // A root with no record counts the generation it was on as good.
        assert_eq!(
            last_good(&root, Some(before.clone())).unwrap(),
            Some(before.clone())
        );
        let units = GateUnits {
            units: vec!["a.service".into()],
            if_running: Vec::new(),
        };
        begin(&root, &g2, &units, Some(before.clone())).unwrap();
        let r = record(&root).unwrap().unwrap();
        assert_eq!(r.last_good, Some(before.clone()));
        assert_eq!(r.pending.unwrap().generation, 2);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/.kbuild/health.json")).unwrap(),
            "{\n  \"version\": 1,\n  \"last_good\": {\n    \"profile\": \"default\",\n    \"generation\": 1\n  },\n  \"pending\": {\n    \"profile\": \"default\",\n    \"generation\": 2,\n    \"units\": [\n      \"a.service\"\n    ]\n  }\n}\n"
        );
        end_pending(&root, None).unwrap();
        let r = record(&root).unwrap().unwrap();
        assert_eq!((r.last_good, r.pending), (Some(before), None));
        mark_good(&root, &g2).unwrap();
        assert_eq!(last_good(&root, None).unwrap(), Some(g2));
    }

    #[test]
    fn gate_units_are_acted_then_checked_then_try_restarted_once_each() {
        use crate::activate::UnitAction as A;
        let c = |u: &str| Check {
            unit: u.into(),
            probe: crate::health::Probe::Tcp {
                address: "127.0.0.1:1".into(),
            },
            timeout_ms: 1,
            interval_ms: 1,
            settle_ms: 0,
        };
        let actions = [
            A::TryRestart {
                unit: "t.service".into(),
                because: Vec::new(),
                trigger: "t.timer".into(),
            },
            A::Start {
                unit: "b.service".into(),
                enabled: true,
            },
        ];
        let pending = Pending {
            profile: "default".into(),
            generation: 2,
            units: vec!["d.service".into()],
            if_running: vec!["u.service".into()],
        };
        assert_eq!(
            gate_units(&actions, &[c("b.service"), c("c.service")], Some(&pending)),
            GateUnits {
                units: vec!["b.service".into(), "c.service".into(), "d.service".into()],
                if_running: vec!["t.service".into(), "u.service".into()],
            }
        );
    }

    /// Regression (issue 12 follow-up): the units whose action failed were found by
    /// searching systemctl's message for ` UNIT``, which misses a name the message quotes
    /// (`'kb-mnt\x2ddata.service'`); they come from the failed calls themselves.
    #[test]
    fn a_failed_action_names_its_unit_even_when_quoted() {
        struct Quiet;
        impl Driver for Quiet {
            fn status(&self, _: &str, _: &str) {}
            fn recovered(&self, _: &Recovered) {}
            fn before_flip(&self, _: &Plan) {}
            fn applied(&self, _: &Plan, _: &Applied) -> Vec<ActionFailure> {
                Vec::new()
            }
            fn gated(&self, _: &GenerationRef, _: &Report) {}
        }
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let unit = "kb-mnt\\x2ddata.service".to_owned();
        let g2 = GenerationRef {
            profile: "default".into(),
            generation: 2,
        };
        let units = GateUnits {
            units: vec![unit.clone(), "etcd.service".into()],
            if_running: Vec::new(),
        };
        let failed = ActionFailure {
            args: vec!["start".into(), unit.clone()],
            unit: Some(unit.clone()),
            how: super::super::Failed::Exited("exit status: 1".into()),
        };
        let failure = gate_one(&root, &g2, None, &units, &[], vec![failed], &Quiet)
            .unwrap()
            .expect("a failed action fails the gate");
        assert_eq!(failure.units(), vec![unit]);
        assert_eq!(
            failure.to_string(),
            "unit actions failed: `systemctl start 'kb-mnt\\x2ddata.service'` exited with exit status: 1 (see `journalctl -u 'kb-mnt\\x2ddata.service'`)"
        );
        // Still pending: nothing marked the failed generation good.
        assert_eq!(
            record(&root).unwrap().unwrap().pending.unwrap().generation,
            2
        );
    }

    /// Regression (issue 12 follow-up): every unit waited for the longest settle and timeout
    /// of all checks; each waits for its own checks' (the longest of them), a unit without
    /// checks for the defaults.
    #[test]
    fn each_unit_settles_and_times_out_by_its_own_checks() {
        let c = |u: &str, timeout_ms: u64, settle_ms: u64| Check {
            unit: u.into(),
            probe: crate::health::Probe::Tcp {
                address: "127.0.0.1:1".into(),
            },
            timeout_ms,
            interval_ms: 100,
            settle_ms,
        };
        let units = ["a.service", "b.service", "c.service"].map(String::from);
        let checks = [
            c("a.service", 2_000, 0),
            c("b.service", 30_000, 5_000),
            c("a.service", 4_000, 500),
        ];
        let ms = Duration::from_millis;
        assert_eq!(
            unit_times(&units, &checks),
            [
                (ms(500), ms(4_000)),
                (ms(5_000), ms(30_000)),
                (UNITS_SETTLE, crate::health::DEFAULT_TIMEOUT),
            ]
        );
    }

    /// Issue 12 follow-up: after the recovery of an interrupted switch, a gate is pending
    /// exactly when the root is on a generation that has not passed it.
    #[test]
    fn after_recovery_a_gate_is_pending_iff_the_root_is_on_an_ungated_generation() {
        use crate::activate::UnitAction as A;
        let g = |n: u64| GenerationRef {
            profile: "default".into(),
            generation: n,
        };
        let pending = |n: u64, units: &[&str]| Pending {
            profile: "default".into(),
            generation: n,
            units: units.iter().map(|u| (*u).to_owned()).collect(),
            if_running: Vec::new(),
        };
        let rec = |good: Option<u64>, p: Option<Pending>| Record {
            version: 1,
            last_good: good.map(g),
            pending: p,
        };
        let check = Check {
            unit: "etcd.service".into(),
            probe: crate::health::Probe::Tcp {
                address: "127.0.0.1:2379".into(),
            },
            timeout_ms: 1000,
            interval_ms: 100,
            settle_ms: 0,
        };
        let restart = |u: &str| A::Restart {
            unit: u.into(),
            because: Vec::new(),
        };
        let recovered = |n: u64, units: Vec<A>| Recovered {
            units,
            undone: None,
            happened: true,
            generation: Some(n),
        };
        let undone = |n: u64, units: Vec<A>| Recovered {
            undone: Some("in the way".into()),
            ..recovered(n, units)
        };
        let checks = std::slice::from_ref(&check);
        let a = || Some(pending(2, &["a.service"]));

        // (why, the record before, the generation the root is on, the recovery, its checks,
        // the record after).
        type Case<'a> = (&'a str, Record, Option<u64>, Recovered, &'a [Check], Record);
        let cases: [Case; 12] = [
            (
                "a gate of 2 recorded, the switch stopped before its journal: on 1, which passed",
                rec(Some(1), a()),
                Some(1),
                Recovered::default(),
                &[],
                rec(Some(1), None),
            ),
            (
                "that switch had replaced a gate pending for 3: 3's gate is pending again",
                rec(Some(1), a()),
                Some(3),
                Recovered::default(),
                checks,
                rec(Some(1), Some(pending(3, &["etcd.service"]))),
            ),
            (
                "... with no check of 3 to wait for, none is",
                rec(Some(1), a()),
                Some(3),
                Recovered::default(),
                &[],
                rec(Some(1), None),
            ),
            (
                "a generation kept by --no-rollback, with no gate pending, stays so",
                rec(Some(1), None),
                Some(3),
                Recovered::default(),
                checks,
                rec(Some(1), None),
            ),
            (
                "the gate of the generation the root is on stays (killed while waiting)",
                rec(Some(1), a()),
                Some(2),
                Recovered::default(),
                &[],
                rec(Some(1), a()),
            ),
            (
                "recovery completed the switch to 2: its gate waits for what recovery restarted",
                rec(Some(1), a()),
                Some(2),
                recovered(2, vec![restart("b.service")]),
                checks,
                rec(
                    Some(1),
                    Some(pending(2, &["b.service", "etcd.service", "a.service"])),
                ),
            ),
            (
                "... and when the record had lost that gate, it is pending again",
                rec(Some(1), None),
                Some(2),
                recovered(2, vec![restart("b.service")]),
                checks,
                rec(Some(1), Some(pending(2, &["b.service", "etcd.service"]))),
            ),
            (
                "recovery undid the switch to 2: back on 1, which passed; 2's gate ends",
                rec(Some(1), a()),
                Some(1),
                undone(1, vec![restart("b.service")]),
                checks,
                rec(Some(1), None),
            ),
            (
                "undone onto 2, kept by --no-rollback: the undo restarted its units",
                rec(Some(1), Some(pending(3, &["a.service"]))),
                Some(2),
                undone(2, vec![restart("b.service")]),
                checks,
                rec(Some(1), Some(pending(2, &["b.service", "etcd.service"]))),
            ),
            (
                "completed onto the last good generation (a rollback's switch)",
                rec(Some(1), a()),
                Some(1),
                recovered(1, vec![restart("b.service")]),
                checks,
                rec(Some(1), None),
            ),
            (
                "nothing to wait for: good, as after a switch with nothing to gate",
                rec(Some(1), None),
                Some(2),
                recovered(2, Vec::new()),
                &[],
                rec(Some(2), None),
            ),
            (
                "an unmanaged root has no gate",
                rec(None, Some(pending(1, &["a.service"]))),
                None,
                undone(0, Vec::new()),
                &[],
                rec(None, None),
            ),
        ];
        for (why, before, now, recovery, checks, after) in cases {
            let now = now.map(g);
            assert_eq!(
                agreeing(before, now.as_ref(), &recovery, checks),
                after,
                "{why}"
            );
        }
    }

    /// Regression (issue 12 follow-up): the line said the longest settle of all units, though
    /// each unit waits for its own.
    #[test]
    fn the_waiting_line_gives_each_unit_its_own_settle() {
        let c = |u: &str, settle_ms: u64| Check {
            unit: u.into(),
            probe: crate::health::Probe::Tcp {
                address: "127.0.0.1:1".into(),
            },
            timeout_ms: 10_000,
            interval_ms: 100,
            settle_ms,
        };
        let line = |units: &[&str], checks: &[Check]| {
            let units: Vec<String> = units.iter().map(|u| (*u).to_owned()).collect();
            waiting_line(&units, &unit_times(&units, checks))
        };
        assert_eq!(
            line(
                &[
                    "kube-apiserver.service",
                    "kube-scheduler.service",
                    "etcd.service"
                ],
                &[
                    c("kube-apiserver.service", 3_000),
                    c("kube-scheduler.service", 500),
                ]
            ),
            "for kube-apiserver.service (3s), kube-scheduler.service (500ms), etcd.service (1s) to be active and settle"
        );
        assert_eq!(
            line(
                &["a.service", "b.service"],
                &[c("a.service", 1_000), c("b.service", 1_000)]
            ),
            "for a.service, b.service to be active and settle (1s)"
        );
        assert_eq!(
            line(&["a.service"], &[c("a.service", 0)]),
            "for a.service to be active and settle (0s)"
        );
    }

    #[test]
    fn a_oneshot_that_ran_and_a_resting_unit_are_done() {
        let s = |kind: &str, remain: bool, active: &str, result: &str| UnitState {
            unit: "x.service".into(),
            active: active.into(),
            sub: "dead".into(),
            restarts: 0,
            kind: kind.into(),
            remain,
            result: result.into(),
        };
        assert!(s("oneshot", false, "inactive", "success").ran_once());
        assert!(!s("oneshot", false, "inactive", "exit-code").ran_once());
        assert!(!s("oneshot", true, "inactive", "success").ran_once());
        assert!(!s("simple", false, "inactive", "success").ran_once());
    }
}
