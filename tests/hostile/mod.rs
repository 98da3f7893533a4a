//! Shared helpers for the hostile-input and fault suites (`hostile_archives`,
//! `hostile_recipes`, `network_faults`, `store_faults`, `root_races`, `prerequisites`,
//! `concurrency`) and the security summary (`security_table`):
//!
//! * the **case tables**: every case of every suite with its category and expected outcome.
//!   Each suite checks that its tests are exactly its table (`cases_tested!`), and
//!   `security_table.rs` turns the tables into the summary that ends `docs/security.md`;
//! * a raw tar writer for archives the `tar` crate refuses to write;
//! * a sentinel directory in `/tmp` that hostile inputs aim at, and its before/after check;
//! * an HTTP server on 127.0.0.1 that misbehaves on purpose;
//! * store listings, `.tmp-*` detection and tmpfs / read-only mounts (root only, always
//!   unmounted on drop).
//!
//! Use it with `mod common;` and `#[macro_use] #[path = "hostile/mod.rs"] mod hostile;`.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Entry, Listed, Run, Sandbox, fixture, listing, shape, top_level};

// =============================================================================================
// Case tables
// =============================================================================================

/// What a hostile input leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Refused: exit code 1, a message naming the problem, nothing kept.
    Error,
    /// Accepted after a documented safe normalization (mode bits dropped, name cleaned, the
    /// later duplicate taken, …).
    Normalized,
    /// Accepted as is (the hostile part is ignored, or the fault is recovered from).
    Success,
}

/// One row of a case table.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    pub category: &'static str,
    pub outcome: Outcome,
}

const fn err(name: &'static str, category: &'static str) -> Case {
    Case {
        name,
        category,
        outcome: Outcome::Error,
    }
}

const fn norm(name: &'static str, category: &'static str) -> Case {
    Case {
        name,
        category,
        outcome: Outcome::Normalized,
    }
}

const fn ok(name: &'static str, category: &'static str) -> Case {
    Case {
        name,
        category,
        outcome: Outcome::Success,
    }
}

pub const A_NAMES: &str = "archive: member names";
pub const A_LINKS: &str = "archive: links";
pub const A_SPECIAL: &str = "archive: special files";
pub const A_SPARSE: &str = "archive: sparse members";
pub const A_DEB: &str = "archive: Debian packages";
pub const A_MODES: &str = "archive: modes and owners";
pub const A_DUPLICATES: &str = "archive: duplicate members";
pub const A_HEADERS: &str = "archive: PAX and GNU headers";
pub const A_STREAMS: &str = "archive: compression and size";
pub const R_TARGETS: &str = "recipe: targets";
pub const R_IMPORTS: &str = "recipe: imports";
pub const R_VARIABLES: &str = "recipe: variables";
pub const R_TEMPLATES: &str = "recipe: templates";
pub const R_SIZES: &str = "recipe: size and nesting";
pub const N_STATUS: &str = "network: HTTP status";
pub const N_TRANSFER: &str = "network: broken transfers";
pub const N_TIMEOUTS: &str = "network: timeouts";
pub const N_REDIRECTS: &str = "network: redirects";
pub const N_MIRRORS: &str = "network: mirrors";
pub const S_DISK: &str = "store: full disk";
pub const S_TAMPER: &str = "store: tampering";
pub const S_CRASH: &str = "store: crashes and permissions";
pub const ROOT_RACES: &str = "root: planted symlinks";
pub const P_ROOT: &str = "root: prerequisites";
pub const P_RECIPES: &str = "recipe: prerequisites";
pub const CONCURRENCY: &str = "concurrency";

/// `tests/hostile_archives.rs`: one crafted tarball per case.
pub const ARCHIVES: &[Case] = &[
    err("absolute_name", A_NAMES),
    err("absolute_name_of_the_selected_member", A_NAMES),
    err("dotdot_escaping_to_the_sentinel", A_NAMES),
    err("dotdot_leading", A_NAMES),
    err("dotdot_resolving_inside_the_archive", A_NAMES),
    norm("dot_segments_and_double_slashes", A_NAMES),
    norm("trailing_slash_on_a_regular_file", A_NAMES),
    ok("gnu_long_name_selected", A_NAMES),
    err("gnu_long_name_with_dotdot", A_NAMES),
    ok("pax_long_path_selected", A_NAMES),
    err("pax_path_absolute", A_NAMES),
    ok("non_utf8_name_unselected", A_NAMES),
    err("non_utf8_absolute_name", A_NAMES),
    err("non_utf8_name_never_matches_a_recipe_member", A_NAMES),
    err("member_hidden_after_the_end_of_archive", A_NAMES),
    ok("symlink_dir_to_etc_then_member_through_it", A_LINKS),
    ok("symlink_dir_to_sentinel_then_member_through_it", A_LINKS),
    ok(
        "symlink_dir_relative_escape_then_member_through_it",
        A_LINKS,
    ),
    ok("symlink_to_outside_unselected", A_LINKS),
    ok("hardlink_to_outside_unselected", A_LINKS),
    err("hardlink_to_outside_selected", A_LINKS),
    ok("hardlink_inside_the_archive_selected", A_LINKS),
    err("symlink_selected", A_LINKS),
    ok("symlink_chain_loop_unselected", A_LINKS),
    err("symlink_loop_selected", A_LINKS),
    err("hardlink_to_a_later_member_selected", A_LINKS),
    err("symlink_climbing_out_of_the_archive_selected", A_LINKS),
    ok("symlink_to_a_later_member_selected", A_LINKS),
    err("symlink_dangling_selected", A_LINKS),
    err("symlink_to_a_directory_selected", A_LINKS),
    err("sparse_pax_blocks_overlapping", A_SPARSE),
    err("sparse_pax_map_past_the_real_size", A_SPARSE),
    err("sparse_pax_map_past_the_data", A_SPARSE),
    ok("sparse_pax_selected", A_SPARSE),
    err("sparse_expanding_past_the_limit", A_SPARSE),
    err("deb_without_a_data_member", A_DEB),
    err("deb_with_a_bad_member_header", A_DEB),
    err("deb_member_larger_than_the_file", A_DEB),
    err("deb_data_in_an_unread_compression", A_DEB),
    err("deb_with_two_data_members", A_DEB),
    ok("char_device_unselected", A_SPECIAL),
    ok("block_device_unselected", A_SPECIAL),
    ok("fifo_unselected", A_SPECIAL),
    err("char_device_selected", A_SPECIAL),
    err("block_device_selected", A_SPECIAL),
    err("fifo_selected", A_SPECIAL),
    err("directory_selected", A_SPECIAL),
    err("unknown_entry_type_selected", A_SPECIAL),
    ok("contiguous_file_selected", A_SPECIAL),
    norm("setuid_executable", A_MODES),
    norm("setgid_sticky_world_writable", A_MODES),
    norm("setuid_on_a_non_executable_target", A_MODES),
    norm("foreign_owner_and_future_mtime", A_MODES),
    norm("duplicate_member_later_bytes_win", A_DUPLICATES),
    err("duplicate_file_then_symlink", A_DUPLICATES),
    err("duplicate_symlink_then_file", A_DUPLICATES),
    norm("pax_unknown_records_and_xattrs", A_HEADERS),
    norm("pax_malformed_path_record_ignored", A_HEADERS),
    ok("pax_size_record", A_HEADERS),
    ok("pax_global_header", A_HEADERS),
    err("pax_header_without_a_member", A_HEADERS),
    err("two_pax_headers_for_one_member", A_HEADERS),
    err("two_gnu_long_names_for_one_member", A_HEADERS),
    err("bad_header_checksum", A_HEADERS),
    err("gzip_with_trailing_garbage", A_STREAMS),
    err("gzip_truncated", A_STREAMS),
    err("zstd_truncated", A_STREAMS),
    err("xz_truncated", A_STREAMS),
    err("decompression_bomb_over_a_small_limit", A_STREAMS),
    ok("default_limit_is_above_the_real_tarball", A_STREAMS),
    err("not_an_archive", A_STREAMS),
    err("more_members_than_the_limit", A_STREAMS),
    err("empty_file", A_STREAMS),
];

/// `tests/hostile_recipes.rs`.
pub const RECIPES: &[Case] = &[
    err("target_in_usr_bin", R_TARGETS),
    err("target_in_root_home", R_TARGETS),
    err("target_with_a_lookalike_prefix", R_TARGETS),
    err("target_relative", R_TARGETS),
    err("target_with_dotdot", R_TARGETS),
    err("target_with_deep_dotdot", R_TARGETS),
    err("target_with_a_dot", R_TARGETS),
    err("target_in_the_state_directory", R_TARGETS),
    err("target_with_a_trailing_slash", R_TARGETS),
    err("target_with_a_control_character", R_TARGETS),
    ok("target_names_outside_the_store_alphabet", R_TARGETS),
    err("recipes_importing_each_other", R_IMPORTS),
    err("recipe_importing_itself", R_IMPORTS),
    err("import_of_a_missing_recipe", R_IMPORTS),
    err("import_with_a_path", R_IMPORTS),
    err("recipe_name_with_a_path", R_IMPORTS),
    err("ip_default_out_of_range", R_VARIABLES),
    err("cidr_default_with_host_bits", R_VARIABLES),
    err("cidr_default_with_a_long_prefix", R_VARIABLES),
    err("port_default_out_of_range", R_VARIABLES),
    err("string_default_with_a_newline", R_VARIABLES),
    err("unknown_variable_type", R_VARIABLES),
    err("set_ip_out_of_range", R_VARIABLES),
    err("set_string_with_a_newline", R_VARIABLES),
    err("template_with_dotdot", R_TEMPLATES),
    err("template_absolute", R_TEMPLATES),
    err("template_symlink_leading_outside", R_TEMPLATES),
    err("template_directory_symlink_leading_outside", R_TEMPLATES),
    err("template_missing", R_TEMPLATES),
    err("template_that_is_a_fifo", R_TEMPLATES),
    err("template_including_a_host_file", R_TEMPLATES),
    err("template_range_bomb", R_TEMPLATES),
    err("template_string_bomb", R_TEMPLATES),
    err("recipe_over_1_mib", R_SIZES),
    ok("recipe_of_exactly_1_mib", R_SIZES),
    err("template_over_1_mib", R_SIZES),
    err("toml_nesting_bomb", R_SIZES),
];

/// `tests/network_faults.rs`.
pub const NETWORK: &[Case] = &[
    err("not_found_is_not_retried", N_STATUS),
    ok("server_error_then_success_is_retried", N_STATUS),
    ok("too_many_requests_then_success_is_retried", N_STATUS),
    err(
        "persistent_server_error_gives_up_after_three_attempts",
        N_STATUS,
    ),
    err("forbidden_is_not_retried", N_STATUS),
    err("connection_closed_mid_body", N_TRANSFER),
    err("body_shorter_than_content_length", N_TRANSFER),
    ok("body_longer_than_content_length", N_TRANSFER),
    err("content_length_shorter_than_the_archive", N_TRANSFER),
    err("connection_closed_before_the_response", N_TRANSFER),
    ok("connection_closed_once_then_success", N_TRANSFER),
    ok("body_cut_after_a_member_then_success", N_TRANSFER),
    err("endless_body_is_cut_off", N_TRANSFER),
    err("endless_file_is_cut_off", N_TRANSFER),
    err("server_stalls_after_the_headers", N_TIMEOUTS),
    err("server_stalls_before_the_headers", N_TIMEOUTS),
    err("redirect_loop", N_REDIRECTS),
    err("redirect_to_a_file_url", N_REDIRECTS),
    err("redirect_to_an_ftp_url", N_REDIRECTS),
    ok("redirect_to_another_http_server", N_REDIRECTS),
    ok("first_mirror_not_found_second_serves", N_MIRRORS),
    ok("first_mirror_hangs_up_second_serves", N_MIRRORS),
    ok("first_mirror_serves_another_file_second_serves", N_MIRRORS),
    err("every_mirror_fails", N_MIRRORS),
];

/// `tests/store_faults.rs`.
pub const STORE: &[Case] = &[
    err("disk_full_while_extracting", S_DISK),
    ok("disk_full_at_every_stage_leaves_a_valid_store", S_DISK),
    ok("deleted_member_object_is_recreated", S_TAMPER),
    ok("deleted_rootfs_object_is_reassembled", S_TAMPER),
    err(
        "flipped_byte_is_found_by_verify_and_refused_by_build",
        S_TAMPER,
    ),
    err(
        "flipped_byte_with_restored_mtime_is_found_by_verify",
        S_TAMPER,
    ),
    err("object_replaced_by_a_symlink_is_found_by_verify", S_TAMPER),
    ok("stale_tmp_entry_is_ignored_and_collected", S_CRASH),
    ok("build_killed_mid_fetch_leaves_only_a_tmp_entry", S_CRASH),
    err("read_only_store_is_a_clear_error", S_CRASH),
];

/// `tests/root_races.rs`.
pub const ROOT: &[Case] = &[
    err("etc_kubernetes_is_a_symlink", ROOT_RACES),
    err("etc_systemd_system_is_a_symlink", ROOT_RACES),
    err("usr_local_bin_is_a_symlink", ROOT_RACES),
    err("usr_local_bin_is_a_dangling_symlink", ROOT_RACES),
    err("usr_is_a_symlink", ROOT_RACES),
    err("etc_is_a_symlink", ROOT_RACES),
    err("etc_kbuild_is_a_symlink", ROOT_RACES),
    err("journal_planted_behind_a_symlinked_state_dir", ROOT_RACES),
    err("etc_kbuild_adopted_is_a_symlink", ROOT_RACES),
    err("managed_file_path_is_a_symlink", ROOT_RACES),
    norm("managed_file_symlink_is_adopted_not_followed", ROOT_RACES),
    err("directory_replaced_by_a_symlink_after_a_switch", ROOT_RACES),
    norm("flip_point_planted_before_the_first_switch", ROOT_RACES),
    err("flip_point_repointed_is_reported_as_drift", ROOT_RACES),
];

/// `tests/prerequisites.rs`.
pub const PREREQUISITES: &[Case] = &[
    err("a_directory_where_the_token_should_be_is_missing", P_ROOT),
    err("a_fifo_is_missing_and_never_opened", P_ROOT),
    err("a_socket_is_missing", P_ROOT),
    err("a_component_that_is_a_file_is_missing", P_ROOT),
    err("nothing_at_all_is_missing_without_a_reason", P_ROOT),
    err("a_dangling_link_is_missing_with_its_target", P_ROOT),
    err("a_link_loop_is_missing", P_ROOT),
    ok("an_absolute_link_is_followed_inside_the_root", P_ROOT),
    ok("a_relative_link_is_followed_inside_the_root", P_ROOT),
    ok("a_link_on_the_way_is_followed_inside_the_root", P_ROOT),
    ok("dot_dot_never_climbs_above_the_root", P_ROOT),
    err("an_absolute_link_to_a_host_file_is_missing", P_ROOT),
    err("a_link_escaping_the_root_to_a_host_file_is_missing", P_ROOT),
    err("an_unreadable_token_is_missing", P_ROOT),
    err(
        "a_directory_link_to_a_host_directory_is_named_as_the_reason",
        P_ROOT,
    ),
    err("a_dangling_directory_link_is_named_as_the_reason", P_ROOT),
    err("a_link_to_a_link_climbing_out_names_every_hop", P_ROOT),
    err(
        "mixed_reasons_each_carry_their_own_and_the_help_lists_each_fix",
        P_ROOT,
    ),
    ok(
        "a_private_key_others_can_read_is_warned_about_and_the_switch_proceeds",
        P_ROOT,
    ),
    err(
        "a_generation_that_installs_its_own_prerequisite_is_refused_at_switch",
        P_ROOT,
    ),
    err(
        "a_target_that_is_a_prerequisite_is_refused_at_load",
        P_RECIPES,
    ),
    err(
        "a_target_inside_a_prerequisite_is_refused_at_load",
        P_RECIPES,
    ),
    err(
        "a_prerequisite_inside_a_target_is_refused_at_load",
        P_RECIPES,
    ),
    err(
        "a_prerequisite_in_kbuilds_state_is_refused_at_load",
        P_RECIPES,
    ),
];

/// `tests/concurrency.rs`.
pub const CONCURRENT: &[Case] = &[ok(
    "builds_gc_and_switch_at_once_leave_a_consistent_store",
    CONCURRENCY,
)];

/// Every suite's table, in the order of the summary.
pub const SUITES: &[(&str, &[Case])] = &[
    ("tests/hostile_archives.rs", ARCHIVES),
    ("tests/hostile_recipes.rs", RECIPES),
    ("tests/network_faults.rs", NETWORK),
    ("tests/store_faults.rs", STORE),
    ("tests/root_races.rs", ROOT),
    ("tests/prerequisites.rs", PREREQUISITES),
    ("tests/concurrency.rs", CONCURRENT),
];

/// A row of the summary: a category, the case whose test shows its representative message,
/// and that message (the test asserts it appears in the case's output).
#[derive(Clone, Copy, Debug)]
pub struct Category {
    pub name: &'static str,
    pub shown_by: &'static str,
    pub message: &'static str,
}

pub const CATEGORIES: &[Category] = &[
    Category {
        name: A_NAMES,
        shown_by: "dotdot_escaping_to_the_sentinel",
        message: "member `kubernetes/../../../../../../../../../../../../tmp/$SENTINEL/pwned` contains `..`",
    },
    Category {
        name: A_LINKS,
        shown_by: "hardlink_to_outside_selected",
        message: "member `kubernetes/server/bin/kubectl` is a hard link to `/tmp/$SENTINEL/canary`, outside the archive (links are followed only to other members)",
    },
    Category {
        name: A_SPECIAL,
        shown_by: "char_device_selected",
        message: "member `kubernetes/server/bin/kubectl` is a device node, not a regular file",
    },
    Category {
        name: A_SPARSE,
        shown_by: "sparse_pax_blocks_overlapping",
        message: "member `kubernetes/server/bin/kubectl` has a sparse map whose blocks overlap or run backwards (at offset 3)",
    },
    Category {
        name: A_DEB,
        shown_by: "deb_without_a_data_member",
        message: "is an `ar` archive without a `data.tar.*` member, not a Debian package",
    },
    Category {
        name: A_MODES,
        shown_by: "setuid_executable",
        message: "stored r-xr-xr-x (0555), mtime 1, no xattrs",
    },
    Category {
        name: A_DUPLICATES,
        shown_by: "duplicate_file_then_symlink",
        message: "member `kubernetes/server/bin/kubectl` appears twice, as a regular file and then as a symbolic link; kbuild cannot tell which one is meant",
    },
    Category {
        name: A_HEADERS,
        shown_by: "bad_header_checksum",
        message: "the archive is corrupt: archive header checksum mismatch",
    },
    Category {
        name: A_STREAMS,
        shown_by: "decompression_bomb_over_a_small_limit",
        message: "the archive is corrupt: unpacks to more than 1048576 bytes (the limit; set KBUILD_MAX_UNPACKED_BYTES to raise it)",
    },
    Category {
        name: R_TARGETS,
        shown_by: "target_with_deep_dotdot",
        message: "target `/usr/local/bin/../../../etc/shadow` contains a `..` component",
    },
    Category {
        name: R_IMPORTS,
        shown_by: "recipes_importing_each_other",
        message: "import cycle: alpha → beta → alpha",
    },
    Category {
        name: R_VARIABLES,
        shown_by: "ip_default_out_of_range",
        message: "default of `IP`: `300.1.1.1` is not an IP address (e.g. 10.72.84.160)",
    },
    Category {
        name: R_TEMPLATES,
        shown_by: "template_symlink_leading_outside",
        message: "template `templates/evil.j2` resolves outside the recipes directory",
    },
    Category {
        name: R_SIZES,
        shown_by: "recipe_over_1_mib",
        message: "`$SANDBOX/recipes/evil.toml` is 1048577 bytes; recipes and templates are limited to 1048576 bytes",
    },
    Category {
        name: N_STATUS,
        shown_by: "not_found_is_not_retried",
        message: "`$SERVER/k/kubernetes-server-linux-amd64.tar.gz`: HTTP status 404",
    },
    Category {
        name: N_TRANSFER,
        shown_by: "body_shorter_than_content_length",
        message: "`$SERVER/k/kubernetes-server-linux-amd64.tar.gz`: reading failed: Peer disconnected",
    },
    Category {
        name: N_TIMEOUTS,
        shown_by: "server_stalls_before_the_headers",
        message: "`$SERVER/k/kubernetes-server-linux-amd64.tar.gz`: no answer for 1 s (KBUILD_HTTP_TIMEOUT sets the limit, in seconds)",
    },
    Category {
        name: N_REDIRECTS,
        shown_by: "redirect_loop",
        message: "`$SERVER/k/kubernetes-server-linux-amd64.tar.gz`: more than 10 redirects (a redirect loop?)",
    },
    Category {
        name: N_MIRRORS,
        shown_by: "first_mirror_not_found_second_serves",
        message: "Mirrored kubernetes-server was served by $SERVER/mirror/kubernetes-server-linux-amd64.tar.gz",
    },
    Category {
        name: S_DISK,
        shown_by: "disk_full_while_extracting",
        message: "No space left on device (os error 28)",
    },
    Category {
        name: S_TAMPER,
        shown_by: "flipped_byte_is_found_by_verify_and_refused_by_build",
        message: "was modified after it was added (its modification time changed)",
    },
    Category {
        name: S_CRASH,
        shown_by: "stale_tmp_entry_is_ignored_and_collected",
        message: "0 generations, 0 objects and 1 temporary entry removed, 15 B freed",
    },
    Category {
        name: ROOT_RACES,
        shown_by: "usr_local_bin_is_a_symlink",
        message: "`$SANDBOX/host/usr/local/bin` is a symlink or not a directory; kbuild will not write through it",
    },
    Category {
        name: P_RECIPES,
        shown_by: "a_target_that_is_a_prerequisite_is_refused_at_load",
        message: "target `/etc/kubernetes/token.csv` is also a prerequisite",
    },
    Category {
        name: P_ROOT,
        shown_by: "a_directory_where_the_token_should_be_is_missing",
        message: "/etc/kubernetes/token.csv (a directory, not a file)",
    },
    Category {
        name: CONCURRENCY,
        shown_by: "builds_gc_and_switch_at_once_leave_a_consistent_store",
        message: "ok",
    },
];

/// The row of `table` called `name`.
pub fn case(table: &[Case], name: &str) -> Case {
    *table
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case `{name}` in the table"))
}

/// Asserts that `observed` is the table's outcome for `name`, and, if `name` shows its
/// category's representative message, that `output` contains it.
#[track_caller]
pub fn check_case(table: &[Case], name: &str, observed: Outcome, output: &str) {
    let c = case(table, name);
    assert_eq!(
        observed, c.outcome,
        "case `{name}`: the table says {:?}, the run gave {observed:?}\n{output}",
        c.outcome
    );
    for cat in CATEGORIES.iter().filter(|cat| cat.shown_by == name) {
        assert_eq!(cat.name, c.category, "`{name}` shows another category");
        assert!(
            output.contains(cat.message),
            "case `{name}` represents `{}` with the message\n  {}\nbut its output was:\n{output}",
            cat.name,
            cat.message
        );
    }
}

/// The outcome a run shows: exit 0 is `Success` (or `Normalized`, which the test decides),
/// exit 1 `Error`; anything else is a failure of the test.
#[track_caller]
pub fn outcome_of(r: &Run, normalized: bool) -> Outcome {
    match (r.code, normalized) {
        (Some(0), false) => Outcome::Success,
        (Some(0), true) => Outcome::Normalized,
        (Some(1), _) => Outcome::Error,
        (c, _) => panic!(
            "unexpected exit {c:?}\n--- stdout\n{}--- stderr\n{}",
            r.stdout, r.stderr
        ),
    }
}

#[track_caller]
pub fn assert_table_matches(table: &[Case], tested: &[&str]) {
    let in_table: BTreeSet<&str> = table.iter().map(|c| c.name).collect();
    assert_eq!(in_table.len(), table.len(), "duplicate names in the table");
    let tested: BTreeSet<&str> = tested.iter().copied().collect();
    let untested: Vec<&&str> = in_table.difference(&tested).collect();
    let unlisted: Vec<&&str> = tested.difference(&in_table).collect();
    assert!(
        untested.is_empty() && unlisted.is_empty(),
        "the case table and the tests differ\n  in the table, no test: {untested:?}\n  tested, not in the table: {unlisted:?}"
    );
}

/// Generates a test checking that the suite's tests are exactly its case table (the named
/// functions must exist: each is coerced to `fn()`).
#[allow(unused_macros)] // security_table.rs reads the tables only
macro_rules! cases_tested {
    ($table:expr; $($f:ident),+ $(,)?) => {
        #[test]
        fn the_case_table_lists_exactly_the_tests_of_this_file() {
            $( let _: fn() = $f; )+
            hostile::assert_table_matches($table, &[$(stringify!($f)),+]);
        }
    };
}

// =============================================================================================
// Raw tar writer
// =============================================================================================

/// One tar header, written byte by byte (POSIX ustar layout). Names longer than 100 bytes
/// are cut: precede the header with a GNU long name or a PAX `path` record.
#[derive(Clone, Debug)]
pub struct Hdr {
    pub name: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub size: u64,
    pub link: Vec<u8>,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub dev: (u32, u32),
}

impl Hdr {
    pub fn new(name: &[u8], kind: u8) -> Hdr {
        Hdr {
            name: name.to_vec(),
            kind,
            mode: if kind == b'5' { 0o755 } else { 0o644 },
            size: 0,
            link: Vec::new(),
            uid: 0,
            gid: 0,
            mtime: 1_490_900_000,
            dev: (0, 0),
        }
    }

    pub fn bytes(&self) -> [u8; 512] {
        fn put(h: &mut [u8; 512], at: usize, len: usize, v: &[u8]) {
            let n = v.len().min(len);
            h[at..at + n].copy_from_slice(&v[..n]);
        }
        fn octal(h: &mut [u8; 512], at: usize, len: usize, v: u64) {
            let s = format!("{v:0w$o}\0", w = len - 1);
            assert_eq!(s.len(), len, "{v} does not fit in {len} octal bytes");
            h[at..at + len].copy_from_slice(s.as_bytes());
        }
        let mut h = [0u8; 512];
        put(&mut h, 0, 100, &self.name);
        octal(&mut h, 100, 8, u64::from(self.mode));
        octal(&mut h, 108, 8, self.uid);
        octal(&mut h, 116, 8, self.gid);
        octal(&mut h, 124, 12, self.size);
        octal(&mut h, 136, 12, self.mtime);
        h[156] = self.kind;
        put(&mut h, 157, 100, &self.link);
        put(&mut h, 257, 6, b"ustar\0");
        put(&mut h, 263, 2, b"00");
        put(&mut h, 265, 32, b"root");
        put(&mut h, 297, 32, b"root");
        octal(&mut h, 329, 8, u64::from(self.dev.0));
        octal(&mut h, 337, 8, u64::from(self.dev.1));
        fix_checksum(&mut h);
        h
    }
}

/// Recomputes a header's checksum field.
pub fn fix_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// A tar stream built entry by entry.
#[derive(Clone, Debug, Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    /// A header exactly as given (its size field may disagree with `data`), then `data`
    /// padded to a whole block.
    pub fn raw(&mut self, h: &Hdr, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(&h.bytes());
        self.bytes.extend_from_slice(data);
        self.pad();
        self
    }

    /// A header whose size is `data.len()`, then `data`.
    pub fn entry(&mut self, mut h: Hdr, data: &[u8]) -> &mut Self {
        h.size = data.len() as u64;
        self.raw(&h, data)
    }

    fn pad(&mut self) {
        let rem = self.bytes.len() % 512;
        if rem != 0 {
            self.bytes.resize(self.bytes.len() + 512 - rem, 0);
        }
    }

    pub fn file(&mut self, name: &[u8], mode: u32, data: &[u8]) -> &mut Self {
        let mut h = Hdr::new(name, b'0');
        h.mode = mode;
        self.entry(h, data)
    }

    pub fn dir(&mut self, name: &[u8]) -> &mut Self {
        self.entry(Hdr::new(name, b'5'), b"")
    }

    pub fn link(&mut self, name: &[u8], kind: u8, target: &[u8]) -> &mut Self {
        let mut h = Hdr::new(name, kind);
        h.mode = 0o777;
        h.link = target.to_vec();
        self.entry(h, b"")
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.link(name, b'2', target)
    }

    pub fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.link(name, b'1', target)
    }

    pub fn device(&mut self, name: &[u8], kind: u8, major: u32, minor: u32) -> &mut Self {
        let mut h = Hdr::new(name, kind);
        h.mode = 0o660;
        h.dev = (major, minor);
        self.entry(h, b"")
    }

    /// A GNU long name record (`././@LongLink`, type `L`) naming the next entry.
    pub fn gnu_long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        self.entry(Hdr::new(b"././@LongLink", b'L'), &data)
    }

    /// A PAX extended header (type `x`) with well-formed records.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let body = pax_records(records);
        self.pax_raw(b'x', &body)
    }

    /// A PAX header of `kind` (`x` or `g`) with `body` as is.
    pub fn pax_raw(&mut self, kind: u8, body: &[u8]) -> &mut Self {
        self.entry(Hdr::new(b"PaxHeaders.0/member", kind), body)
    }

    /// The fixture's real layout; `edit` may write its own entries in place of one (and
    /// returns true when it did).
    pub fn layout(&mut self, mut edit: impl FnMut(&Entry, &mut RawTar) -> bool) -> &mut Self {
        for e in &fixture().tarball.entries {
            if edit(e, self) {
                continue;
            }
            match e {
                Entry::Dir(p) => self.dir(p.as_bytes()),
                Entry::File { path, mode, bytes } => self.file(path.as_bytes(), *mode, bytes),
                Entry::Symlink { path, target } => self.symlink(path.as_bytes(), target.as_bytes()),
            };
        }
        self
    }

    /// The stream with its end-of-archive marker (two zero blocks).
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.resize(out.len() + 1024, 0);
        out
    }
}

/// PAX records, each `<len> <key>=<value>\n` with `len` counting the whole record.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = 1 + k.len() + 1 + v.len() + 1; // ' ' key '=' value '\n'
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

// =============================================================================================
// The sentinel: a directory in /tmp that hostile inputs aim at
// =============================================================================================

/// `/tmp/kbuild-sentinel-XXXXXX`, owned by the test, holding a canary file. Hostile archives
/// and planted symlinks point here; it must be exactly as it was afterwards.
pub struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    pub fn new() -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("kbuild-sentinel-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(dir.path().join("canary"), b"kbuild must never write here\n").unwrap();
        Sentinel { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path without the leading `/tmp/`: `kbuild-sentinel-XXXXXX`.
    pub fn name(&self) -> String {
        self.dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Every entry with mode, content, mtime and inode.
    pub fn snapshot(&self) -> Vec<Listed> {
        listing(self.dir.path())
    }

    #[track_caller]
    pub fn assert_untouched(&self, before: &[Listed]) {
        let now = self.snapshot();
        assert_eq!(
            now,
            before,
            "the sentinel `{}` changed",
            self.dir.path().display()
        );
    }

    /// `s` with the sentinel's name replaced by `$SENTINEL`.
    pub fn mask(&self, s: &str) -> String {
        s.replace(&self.name(), "$SENTINEL")
    }
}

// =============================================================================================
// Store checks
// =============================================================================================

/// `.tmp-*` entries at the top of the store and in its bookkeeping directories.
pub fn tmp_entries(store: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![store.to_owned()];
    for d in ["index", "meta", "generations", "roots"] {
        dirs.push(store.join(".kbuild").join(d));
    }
    dirs.push(store.join(".kbuild"));
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".tmp-") {
                out.push(e.path().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[track_caller]
pub fn assert_no_tmp(store: &Path) {
    let t = tmp_entries(store);
    assert!(t.is_empty(), "temporary entries left in the store: {t:?}");
}

/// The store's objects (top-level names that are not dot entries).
pub fn objects(store: &Path) -> BTreeSet<String> {
    top_level(store)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// (path, kind, mode, content) of everything in the store; empty if it does not exist.
pub fn store_shape(store: &Path) -> Vec<(String, crate::common::Kind, u32, String)> {
    if store.exists() {
        shape(&listing(store))
    } else {
        vec![]
    }
}

/// Replaces the random part of `.tmp-XXXXXX` and `.tmp-work-XXXXXX` names by `XXXXXX`.
pub fn mask_tmp(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(".tmp-") {
        out.push_str(&rest[..i + 5]);
        rest = &rest[i + 5..];
        if let Some(r) = rest.strip_prefix("work-") {
            out.push_str("work-");
            rest = r;
        }
        let n = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        out.push_str("XXXXXX");
        rest = &rest[n..];
    }
    out.push_str(rest);
    out
}

// =============================================================================================
// Running kbuild
// =============================================================================================

/// `kbuild --store … --recipes … --lock-file … ARGS` with extra environment variables.
pub fn kbuild_env(sb: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut c = sb.command(args);
    for (k, v) in env {
        c.env(k, v);
    }
    sb.run(c)
}

/// `kbuild verify` of the sandbox's store (no root: the sandbox's `KBUILD_ROOT` is removed,
/// or verify would also check a root that does not exist).
pub fn verify(sb: &Sandbox) -> Run {
    let mut c = sb.bare();
    c.env_remove("KBUILD_ROOT")
        .arg("--store")
        .arg(&sb.store)
        .arg("verify");
    sb.run(c)
}

/// Writes `bytes` to `$SANDBOX/<dir>/kubernetes-server-linux-amd64.tar.gz`; its `file://` URL.
pub fn write_archive(sb: &Sandbox, dir: &str, bytes: &[u8]) -> String {
    let path = sb
        .dir
        .join(dir)
        .join("kubernetes-server-linux-amd64.tar.gz");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    format!("file://{}", path.display())
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The `Fetching`/`Reading` and `Read` lines of one transfer of `bytes` bytes of input
/// `kubernetes-server` (the `Read` line only appears when bytes arrived).
pub fn transfer(url: &str, bytes: usize) -> String {
    let verb = if url.starts_with("file://") {
        "Reading"
    } else {
        "Fetching"
    };
    let mut s = format!("{verb:>12} kubernetes-server from {url}\n");
    if bytes > 0 {
        s.push_str(&format!(
            "        Read kubernetes-server: {:.1} MiB in $TIME\n",
            bytes as f64 / (1u64 << 20) as f64
        ));
    }
    s
}

// =============================================================================================
// Mounts (root only; unmounted on drop)
// =============================================================================================

/// A mount made by a test, unmounted when dropped.
pub struct Mounted {
    dir: PathBuf,
}

fn run_tool(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Mounted {
    /// `mount -t tmpfs -o size=SIZE tmpfs DIR` (DIR is created).
    pub fn tmpfs(dir: &Path, size: &str) -> Result<Mounted, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let d = dir.to_str().unwrap();
        run_tool(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            d,
        ])?;
        Ok(Mounted {
            dir: dir.to_owned(),
        })
    }

    /// DIR bind-mounted onto itself, read-only.
    pub fn read_only(dir: &Path) -> Result<Mounted, String> {
        let d = dir.to_str().unwrap();
        run_tool(&["mount", "--bind", d, d])?;
        let m = Mounted {
            dir: dir.to_owned(),
        };
        run_tool(&["mount", "-o", "remount,bind,ro", d])?;
        Ok(m)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let d = self.dir.to_str().unwrap();
        if run_tool(&["umount", d]).is_err() {
            let _ = run_tool(&["umount", "-l", d]);
        }
    }
}

/// `chattr +i` on `paths` (for when mounting is refused), undone on drop.
pub struct Immutable {
    paths: Vec<PathBuf>,
}

impl Immutable {
    pub fn new(paths: &[PathBuf]) -> Result<Immutable, String> {
        let mut done = Immutable { paths: vec![] };
        for p in paths {
            run_tool(&["chattr", "+i", p.to_str().unwrap()])?;
            done.paths.push(p.clone());
        }
        Ok(done)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = run_tool(&["chattr", "-i", p.to_str().unwrap()]);
        }
    }
}

// =============================================================================================
// A misbehaving HTTP server
// =============================================================================================

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the bytes and their Content-Length.
    Body(Vec<u8>),
    /// This status with a short body.
    Status(u16),
    /// 302 to this location.
    Redirect(String),
    /// Content-Length of the whole body, then only its first `keep` bytes, then close.
    Cut { body: Vec<u8>, keep: usize },
    /// Chunked transfer: the first `keep` bytes in chunks, then close without the last chunk.
    CutChunked { body: Vec<u8>, keep: usize },
    /// Content-Length `declared`, then all of `body` (more or fewer bytes than declared).
    Declared { body: Vec<u8>, declared: usize },
    /// Reads the request, then holds the connection without a byte for `stall`.
    StallBeforeHeaders(Duration),
    /// Headers and the first `keep` bytes of `body`, then silence for `stall`.
    StallAfter {
        body: Vec<u8>,
        keep: usize,
        stall: Duration,
    },
    /// Reads the request and closes the connection without answering.
    HangUp,
    /// 200 without a Content-Length, then noise until the client goes away.
    Endless,
}

/// An HTTP/1.1 server on 127.0.0.1 answering each path from a script: the replies for a
/// path are used in order, the last one repeating. Unscripted paths get 404. Every request
/// line is recorded.
pub struct EvilServer {
    base: String,
    addr: std::net::SocketAddr,
    script: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl EvilServer {
    pub fn start() -> EvilServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let script: Arc<Mutex<HashMap<String, VecDeque<Reply>>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (script, requests, stop) = (script.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (script, requests) = (script.clone(), requests.clone());
                    std::thread::spawn(move || serve(stream, &script, &requests));
                }
            });
        }
        EvilServer {
            base: format!("http://{addr}"),
            addr,
            script,
            requests,
            stop,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers `path` with `replies`, in order, the last one repeating.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        assert!(!replies.is_empty());
        self.script
            .lock()
            .unwrap()
            .insert(path.to_owned(), replies.into());
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self, path: &str) -> usize {
        let line = format!("GET {path}");
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| **r == line)
            .count()
    }
}

impl Drop for EvilServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        302 => "Found",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

fn serve(
    stream: TcpStream,
    script: &Mutex<HashMap<String, VecDeque<Reply>>>,
    requests: &Mutex<Vec<String>>,
) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    requests.lock().unwrap().push(format!("{method} {path}"));
    let reply = {
        let mut s = script.lock().unwrap();
        match s.get_mut(&path) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) => q.front().unwrap().clone(),
            None => Reply::Status(404),
        }
    };
    let mut out = stream;
    let head = |status: u16, extra: &str| {
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/octet-stream\r\n{extra}Connection: close\r\n\r\n",
            reason(status)
        )
    };
    let _ = match reply {
        Reply::Body(body) => out
            .write_all(head(200, &format!("Content-Length: {}\r\n", body.len())).as_bytes())
            .and_then(|()| out.write_all(&body)),
        Reply::Status(code) => {
            let body = format!("status {code}\n");
            out.write_all(head(code, &format!("Content-Length: {}\r\n", body.len())).as_bytes())
                .and_then(|()| out.write_all(body.as_bytes()))
        }
        Reply::Redirect(loc) => out
            .write_all(head(302, &format!("Location: {loc}\r\nContent-Length: 0\r\n")).as_bytes()),
        Reply::Cut { body, keep } => out
            .write_all(head(200, &format!("Content-Length: {}\r\n", body.len())).as_bytes())
            .and_then(|()| out.write_all(&body[..keep])),
        Reply::CutChunked { body, keep } => {
            let mut r = out.write_all(head(200, "Transfer-Encoding: chunked\r\n").as_bytes());
            for chunk in body[..keep].chunks(16 * 1024) {
                r = r
                    .and_then(|()| out.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()))
                    .and_then(|()| out.write_all(chunk))
                    .and_then(|()| out.write_all(b"\r\n"));
            }
            r
        }
        Reply::Declared { body, declared } => out
            .write_all(head(200, &format!("Content-Length: {declared}\r\n")).as_bytes())
            .and_then(|()| out.write_all(&body)),
        Reply::StallBeforeHeaders(d) => {
            std::thread::sleep(d);
            Ok(())
        }
        Reply::StallAfter { body, keep, stall } => {
            let r = out
                .write_all(head(200, &format!("Content-Length: {}\r\n", body.len())).as_bytes())
                .and_then(|()| out.write_all(&body[..keep]))
                .and_then(|()| out.flush());
            std::thread::sleep(stall);
            r
        }
        Reply::HangUp => Ok(()),
        Reply::Endless => {
            let noise = crate::common::noise("endless", 64 << 10);
            let mut r = out.write_all(head(200, "").as_bytes());
            while r.is_ok() {
                r = out.write_all(&noise);
            }
            r
        }
    };
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Write);
    // Let the client close first, so what was sent is not cut by a reset.
    let mut sink = [0u8; 512];
    let _ = reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)));
    let _ = reader.get_mut().read(&mut sink);
}

// =============================================================================================
// Misc
// =============================================================================================

/// Relative path → bytes of every regular file below `dir`, plus symlink targets.
pub fn tree_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in crate::common::walk_any(dir)
        .min_depth(1)
        .sort_by_file_name()
    {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        if e.file_type().is_file() {
            out.insert(rel, std::fs::read(e.path()).unwrap());
        } else if e.file_type().is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            out.insert(rel, format!("-> {}", t.display()).into_bytes());
        }
    }
    out
}
