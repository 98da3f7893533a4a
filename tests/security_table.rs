//! The summary that ends `docs/security.md` is computed from the case tables of the hostile
//! and fault suites (`tests/hostile/mod.rs`): how many inputs each category tried, how many
//! end in an error, a safe normalization or a success, and the message a user sees (which
//! the case named in `hostile::CATEGORIES` asserts it prints). The doc must match exactly, so
//! it cannot drift from the tests: after changing a table, paste the table this test prints.

mod common;
#[macro_use]
#[path = "hostile/mod.rs"]
mod hostile;

use std::collections::BTreeSet;

use hostile::{CATEGORIES, Case, Outcome, SUITES};

fn all_cases() -> Vec<Case> {
    SUITES.iter().flat_map(|(_, t)| t.iter().copied()).collect()
}

fn count(cases: &[Case], o: Outcome) -> usize {
    cases.iter().filter(|c| c.outcome == o).count()
}

/// A Markdown code span that may hold backticks.
fn code(s: &str) -> String {
    format!("`` {s} ``")
}

/// The summary table, as it must end `docs/security.md`.
fn summary() -> String {
    let mut out = String::from(
        "| category | inputs tried | outcomes (errors / safe normalizations / successes) | what a user sees |\n|---|---:|---|---|\n",
    );
    let all = all_cases();
    for cat in CATEGORIES {
        let cases: Vec<Case> = all
            .iter()
            .filter(|c| c.category == cat.name)
            .copied()
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} / {} / {} | {} |\n",
            cat.name,
            cases.len(),
            count(&cases, Outcome::Error),
            count(&cases, Outcome::Normalized),
            count(&cases, Outcome::Success),
            code(cat.message),
        ));
    }
    out.push_str(&format!(
        "| **all** | **{}** | **{} / {} / {}** | |\n",
        all.len(),
        count(&all, Outcome::Error),
        count(&all, Outcome::Normalized),
        count(&all, Outcome::Success),
    ));
    out
}

fn doc() -> String {
    std::fs::read_to_string(common::repo_dir().join("docs/security.md")).unwrap_or_default()
}

#[test]
fn docs_security_md_ends_with_the_summary_of_the_case_tables() {
    let doc = doc();
    let expected = summary();
    let start = doc.rfind("| category | inputs tried |");
    let actual = start.map(|i| &doc[i..]).unwrap_or("(no summary table)");
    assert!(
        actual == expected,
        "docs/security.md must end with exactly this table (computed from the case tables):\n\n{expected}\n--- it ends with:\n{actual}"
    );
}

#[test]
fn every_case_is_in_a_summarized_category_and_every_category_is_shown() {
    let all = all_cases();
    let names: BTreeSet<&str> = CATEGORIES.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), CATEGORIES.len(), "a category is listed twice");
    for c in &all {
        assert!(
            names.contains(c.category),
            "case `{}` has category `{}`, which the summary lacks",
            c.name,
            c.category
        );
    }
    for cat in CATEGORIES {
        let shown = all
            .iter()
            .find(|c| c.name == cat.shown_by)
            .unwrap_or_else(|| panic!("`{}` is shown by an unknown case", cat.name));
        assert_eq!(shown.category, cat.name, "`{}`", cat.shown_by);
        assert!(!cat.message.contains('|') && !cat.message.contains("``"));
    }
    // Case names are unique across suites (the summary counts each once).
    let unique: BTreeSet<&str> = all.iter().map(|c| c.name).collect();
    assert_eq!(unique.len(), all.len(), "a case name is used twice");
}

#[test]
fn the_archive_corpus_is_at_least_25_crafted_tarballs() {
    assert!(hostile::ARCHIVES.len() >= 25);
}

#[test]
fn the_doc_names_every_suite_and_the_fuzz_targets() {
    let doc = doc();
    for (file, _) in SUITES {
        assert!(
            doc.contains(file),
            "docs/security.md does not mention {file}"
        );
    }
    for needle in [
        "fuzz/run.sh",
        "`recipe`",
        "`template`",
        "`lockfile`",
        "`unpack`",
        "KBUILD_MAX_UNPACKED_BYTES",
        "KBUILD_HTTP_TIMEOUT",
        "KBUILD_FAULT_ENOSPC",
        "PEP 706",
    ] {
        assert!(
            doc.contains(needle),
            "docs/security.md does not mention {needle}"
        );
    }
}
