//! Shipping generations: an OCI artifact per generation, written as an OCI image layout
//! (`export`/`import`) or sent to any registry that follows the OCI distribution spec
//! (`push`/`pull`). The format is specified in `docs/registry.md`.
//!
//! ```text
//! artifact.rs  the artifact: config blob (generation, objects, rootfs tree), manifest,
//!              one zstd blob per content object; deterministic bytes
//! layout.rs    OCI image layout directories (oci-layout, index.json, blobs/sha256/…)
//! import.rs    verify a staged artifact and add it to the store, then record the generation
//! cache.rs     blob digests and pushed-to repositories remembered for the next push
//! auth.rs      credentials from the files docker, podman and skopeo use, and the
//!              credential helpers they name (docker-credential-NAME)
//! oauth.rs     the identity-token (OAuth2 refresh token) exchange at a token realm
//! remote.rs    push and pull over the distribution API (oci-client on a current-thread
//!              tokio runtime, kept inside this module)
//! ```
//!
//! Nothing from outside reaches the store unchecked: every object is decompressed into a
//! temp entry of the store, hashed, and compared with its name before it is added; the
//! rootfs is rebuilt from its tree (hardlinks to the objects) and compared with its name;
//! only then is the generation recorded.

pub mod artifact;
pub mod auth;
pub mod cache;
pub mod import;
pub mod layout;
pub mod oauth;
pub mod remote;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::generation::Generation;
use crate::observe::Observer;
use crate::store::{LockMode, Store};

pub use artifact::{ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, OBJECT_MEDIA_TYPE};
pub use import::Imported;
pub use remote::{PullReport, PushReport, RemoteOptions};

/// Errors of export, import, push and pull. Each names the directory or the reference.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `why` says what is wrong; `fix`, for a reference written in another tool's syntax
    /// (`docker://…`, `https://…`, `oci:DIR`), the `help:` that says what to write instead.
    #[error("`{reference}` is not a registry reference")]
    BadReference {
        reference: String,
        why: String,
        fix: Option<String>,
    },
    #[error("cannot read OCI layout `{}`", dir.display())]
    Layout {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a kbuild OCI layout: {why}", dir.display())]
    NotALayout { dir: PathBuf, why: String },
    /// `import DIR` of a path that does not exist (or, through a symbolic link, names
    /// nothing).
    #[error("layout directory `{}` does not exist", dir.display())]
    LayoutMissing { dir: PathBuf },
    /// `import FILE`: `archive` names the kind of archive it starts like (`a tar archive`,
    /// `a gzip-compressed file`, …), if it does.
    #[error("`{}` is {}, not an OCI layout directory", dir.display(), archive.unwrap_or("a file"))]
    LayoutIsAFile {
        dir: PathBuf,
        archive: Option<&'static str>,
    },
    /// `import DIR` where an export to `DIR` was interrupted: `staging` is what it left
    /// (`DIR.kbuild-tmp` beside a missing `DIR`, or `DIR/.kbuild-tmp` in an empty one).
    #[error("`{}` is no OCI layout: an export to it was interrupted (it left `{}`)", dir.display(), staging.display())]
    ExportInterrupted { dir: PathBuf, staging: PathBuf },
    /// `why` says what is there (the first few names, whether it is an OCI layout).
    #[error("export directory `{}` already exists and is not empty ({why})", dir.display())]
    /// `removable`: whether `rm -r DIR` is fit advice (not for `/`, `.`, `..`, the current
    /// or home directory or one above them).
    OutputNotEmpty {
        dir: PathBuf,
        why: String,
        removable: bool,
    },
    /// The export directory is a file or a dangling symbolic link, or names no directory.
    #[error("export directory `{}` {why}", dir.display())]
    OutputNotADirectory { dir: PathBuf, why: String },
    #[error("the parent `{}` of export directory `{}` does not exist", parent.display(), dir.display())]
    OutputParentMissing { dir: PathBuf, parent: PathBuf },
    /// A parent of the export directory is a file (`--output afile/x`).
    #[error("the parent `{}` of export directory `{}` is not a directory", parent.display(), dir.display())]
    OutputParentNotADirectory { dir: PathBuf, parent: PathBuf },
    /// `--output oci:DIR`, skopeo's syntax for a layout (no such directory exists).
    #[error("export directory `{}` is written as skopeo's `oci:` transport", dir.display())]
    OutputTransport { dir: PathBuf, path: PathBuf },
    /// Something that is no directory has the name the export stages under
    /// (`DIR.kbuild-tmp`, or `DIR/.kbuild-tmp`).
    #[error("`{}`, where the export to `{}` is staged, is not a directory", staging.display(), dir.display())]
    StagingInTheWay { dir: PathBuf, staging: PathBuf },
    /// Writing the export (its staging directory, a blob, the final rename) failed; the
    /// source names the path.
    #[error("cannot write the export to `{}`", dir.display())]
    ExportWrite {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The artifact (from a layout or a registry) is malformed or hostile.
    #[error("{what} refused: {why}")]
    Refused { what: String, why: String },
    /// `from_registry`: the bytes came from a registry (pull), not a layout directory: the
    /// registry checked them against the digest when they were pushed, so its copy (or
    /// something between) is at fault, not the sender.
    #[error("blob `{digest}` of {what} does not match its digest (got `{actual}`)")]
    DigestMismatch {
        what: String,
        digest: String,
        actual: String,
        from_registry: bool,
    },
    /// A blob whose length is not the one its manifest declares: the registry's
    /// `Content-Length`, the bytes received or the layout's file. (A sending store whose push
    /// cache entry holds a wrong size publishes such a manifest.)
    #[error(
        "blob `{digest}` of {what} is {actual}, not the {declared} bytes its manifest declares"
    )]
    SizeMismatch {
        what: String,
        digest: String,
        /// What was found, with its unit: `798 bytes (the registry's Content-Length)`.
        actual: String,
        declared: u64,
    },
    #[error("blob `{digest}` of {what} is missing")]
    MissingBlob { what: String, digest: String },
    #[error("cannot read store object `{object}` for the artifact")]
    Object {
        object: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no `{reference}` in the registry (manifest unknown)")]
    NotFound { what: String, reference: String },
    #[error("{what}: the registry {} for `{reference}` ({credentials})", if *anonymous { "requires credentials" } else { "refused the credentials" })]
    Unauthorized {
        what: String,
        reference: String,
        /// Whether no credentials were sent (none found).
        anonymous: bool,
        credentials: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}: the request to the registry of `{reference}` failed")]
    Remote {
        what: String,
        reference: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("`{reference}` is a registry on the network, and `--offline` was given")]
    Offline { reference: String },
    #[error("cannot read credentials file `{}`", path.display())]
    AuthFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A credentials file names a helper (`credHelpers`, `credsStore`) that is not on `PATH`.
    #[error("credential helper {helper} for `{registry}` is not installed")]
    HelperMissing {
        helper: auth::Helper,
        registry: String,
    },
    /// A credential helper failed, or answered something else than credentials or "not
    /// found"; the source holds its exit status and what it said.
    #[error("credential helper {helper} failed to give the credentials for `{registry}`")]
    HelperFailed {
        helper: auth::Helper,
        registry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read CA file `{}`", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl RegistryError {
    /// This error, said of bytes a registry sent (a [`RegistryError::DigestMismatch`] then
    /// points at the registry's copy, not at the sender).
    pub fn in_registry(self) -> RegistryError {
        match self {
            RegistryError::DigestMismatch {
                what,
                digest,
                actual,
                ..
            } => RegistryError::DigestMismatch {
                what,
                digest,
                actual,
                from_registry: true,
            },
            e => e,
        }
    }

    /// The `help:` line for this error, where there is a fix.
    pub fn help(&self) -> Option<String> {
        Some(match self {
            RegistryError::BadReference { fix: Some(fix), .. } => fix.clone(),
            RegistryError::BadReference { why, .. } => format!(
                "{why}; write `host[:port]/repository[:tag|@sha256:…]`, e.g. `registry.example:5000/kbuild/masters:master-1-2`"
            ),
            RegistryError::Store(e) => return Store::help(e),
            RegistryError::Offline { .. } => {
                "drop `--offline`; to install with no network, run `kbuild export --output DIR` where the generation is and `kbuild import DIR` here".to_owned()
            }
            // As `cargo new`: never merge into or overwrite what is there (an OCI layout
            // with two images would not import), so no `--force`; removing it is explicit.
            RegistryError::OutputNotEmpty { dir, removable: true, .. } => format!(
                "export into a new or empty directory, or remove this one first (`rm -r {}`)",
                dir.display()
            ),
            RegistryError::OutputNotEmpty { .. } | RegistryError::OutputNotADirectory { .. } => {
                "choose another directory: a new or empty one".to_owned()
            }
            RegistryError::OutputParentMissing { parent, .. } => format!(
                "make it first (`mkdir -p {}`), or choose another directory",
                parent.display()
            ),
            RegistryError::OutputParentNotADirectory { parent, .. } => format!(
                "choose another directory (`{}` is a file)",
                parent.display()
            ),
            RegistryError::OutputTransport { dir, path } => format!(
                "drop `oci:`: write `--output {}` (a directory really named so: `--output ./{}`)",
                path.display(),
                dir.display()
            ),
            RegistryError::StagingInTheWay { staging, .. } => format!(
                "remove it if nothing of yours is in it (`rm {}`), or choose another directory",
                staging.display()
            ),
            RegistryError::ExportWrite { dir, source } => match source.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    format!(
                        "export where you can write: a new directory in a writable one, or an empty one of yours; nothing of this export was left at `{}`",
                        dir.display()
                    )
                }
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => format!(
                    "free space there or export to another filesystem; nothing of this export was left at `{}`",
                    dir.display()
                ),
                _ => return None,
            },
            RegistryError::NotALayout { .. } | RegistryError::LayoutIsAFile { archive: None, .. } => {
                "give the directory `kbuild export --output` wrote (or `skopeo copy … oci:DIR` made)"
                    .to_owned()
            }
            RegistryError::LayoutIsAFile { dir, .. } => format!(
                "unpack it first (`mkdir layout && tar -xf {} -C layout`), then import the layout directory it holds",
                dir.display()
            ),
            RegistryError::LayoutMissing { dir } => {
                match dir.to_str().and_then(|d| d.strip_prefix("oci:")) {
                    // skopeo's `oci:PATH[:REFERENCE]`.
                    Some(rest) => {
                        let path = rest.split_once(':').map_or(rest, |(p, _)| p);
                        format!("drop skopeo's `oci:` transport: write `kbuild import {path}`")
                    }
                    None => "give the directory `kbuild export --output` wrote (or `skopeo copy … oci:DIR` made)".to_owned(),
                }
            }
            RegistryError::ExportInterrupted { dir, .. } => format!(
                "run the export again (`kbuild export --output {}` where the generation is): it reuses what was left, and `{}` appears only once complete",
                dir.display(),
                dir.display()
            ),
            RegistryError::DigestMismatch {
                digest,
                from_registry: true,
                ..
            } => format!(
                "nothing was added to the store; the registry's copy of `{digest}` is damaged (it checked the bytes when they were pushed), or something between altered them: ask the registry's admin to remove that blob from its storage, then push the generation again (a push sends the blobs a registry lacks)"
            ),
            RegistryError::DigestMismatch { .. } => {
                "nothing was added to the store; the layout was damaged after the export (a bad copy or medium): copy it again, or export again".to_owned()
            }
            RegistryError::SizeMismatch { .. } | RegistryError::Refused { .. } => {
                // The sender's objects are damaged or its push cache names another object's
                // blob (review13 MED-9), which `verify --repair` there mends; or the copy
                // itself is, which only sending it again mends.
                "nothing was added to the store; if the sending store is at fault, run `kbuild verify --repair` there (it re-hashes every object and drops push cache entries that name a wrong blob), then push or export the generation again; if the copy was damaged at rest or on the way, export again (a layout) or delete the blob from the registry and push again".to_owned()
            }
            RegistryError::MissingBlob { .. } => {
                "copy the whole layout directory (every file under `blobs/sha256/`), or export again".to_owned()
            }
            RegistryError::NotFound { reference, .. } => {
                let name = Reference::parse(reference)
                    .map(|r| r.name())
                    .unwrap_or_else(|_| "HOST/REPOSITORY".to_owned());
                format!("check the repository and tag (`skopeo list-tags docker://{name}` lists the tags)")
            }
            RegistryError::AuthFile { path, source } => match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory => format!(
                    "give `--authfile` an existing credentials file (`{}` is not one)",
                    path.display()
                ),
                std::io::ErrorKind::PermissionDenied => format!(
                    "run as a user who can read `{}`, or name another file with `--authfile`",
                    path.display()
                ),
                _ => format!(
                    "fix or remove `{}`: it should look like `{{\"auths\": {{\"HOST\": {{\"auth\": \"BASE64 of user:password\"}}}}}}` (containers-auth.json(5))",
                    path.display()
                ),
            },
            RegistryError::HelperMissing { helper, registry } => format!(
                "install `{}` on the PATH, or remove the `{}` entry for `{registry}` from `{}`",
                helper.program,
                helper.field,
                helper.file.display()
            ),
            RegistryError::HelperFailed { helper, registry, .. } => format!(
                "check the helper with `echo {registry} | {} get`, or remove the `{}` entry from `{}`",
                helper.program,
                helper.field,
                helper.file.display()
            ),
            RegistryError::Unauthorized { reference, .. } => {
                let host = Reference::parse(reference)
                    .map(|r| r.registry)
                    .unwrap_or_else(|_| "HOST".to_owned());
                format!(
                    "log in with `podman login {host}`, `skopeo login {host}` or `docker login {host}`, or name a credentials file with `--authfile`"
                )
            }
            RegistryError::Remote { source, .. } => {
                let text = source.to_string();
                let chain = {
                    let mut all = text.clone();
                    let mut cause = source.source();
                    while let Some(c) = cause {
                        all.push_str(&c.to_string());
                        cause = c.source();
                    }
                    all
                };
                if chain.contains("HTTP request to an HTTPS server")
                    || chain.contains("plain HTTP request was sent to HTTPS port")
                {
                    // Go's net/http and nginx, answering plain HTTP on a TLS port (400).
                    "the registry speaks HTTPS: drop `--plain-http` (and give its CA with `--ca-file` if a private CA signed its certificate)".to_owned()
                } else if chain.contains("InvalidContentType") {
                    "the registry seems to speak plain HTTP: add `--plain-http` if that is expected".to_owned()
                } else if chain.contains("certificate") || chain.contains("UnknownIssuer") {
                    "give the registry's CA with `--ca-file`, or `--plain-http` for a registry without TLS".to_owned()
                } else {
                    "check that the registry is up; a rerun sends or fetches only what did not arrive".to_owned()
                }
            }
            // A read-only mount (or someone else's store), for an import or pull that has
            // something to add or record (one that has not succeeds without writing).
            RegistryError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                "the store cannot be written here (a read-only mount, or not your files): nothing was changed; remount it read-write, run as its owner, or give a writable `--store`".to_owned()
            }
            _ => return None,
        })
    }
}

/// A registry reference, `host[:port]/repository[:tag|@sha256:…]` (the form skopeo's
/// `docker://` transport takes, without the transport).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host` or `host:port`.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `s`. The first `/`-separated component is always the registry (no implicit
    /// Docker Hub: kbuild ships to the registry the operator names).
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        if let Some(e) = foreign_syntax(s) {
            return Err(e);
        }
        let bad = |why: &str| RegistryError::BadReference {
            reference: s.to_owned(),
            why: why.to_owned(),
            fix: None,
        };
        let (registry, rest) = s
            .split_once('/')
            .ok_or_else(|| bad("it has no `/repository` after the registry host"))?;
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(bad(
                "the registry host is empty or has characters a host cannot have",
            ));
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("the digest is not `sha256:…`"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(bad(
                        "the digest is not `sha256:` and 64 lowercase hex digits",
                    ));
                }
                (r, Some(d.to_owned()))
            }
            None => (rest, None),
        };
        // A `:` after the last `/` starts the tag.
        let (repository, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_owned())),
            _ => (rest, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository must be lowercase letters, digits, `.`, `_`, `-`, separated by `/`",
            ));
        }
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(bad(
                "the tag must be 1-128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`",
            ));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// This reference with `tag` when it names neither a tag nor a digest.
    pub fn or_tag(mut self, tag: &str) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(tag.to_owned());
        }
        self
    }

    /// `host/repository` (no tag, no digest).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// `s` written in another tool's syntax, which operators copy from skopeo, podman or a
/// browser: a transport (`docker://REF`, skopeo's `oci:DIR`, …) or a URL scheme
/// (`https://REF`). The error says what to write instead (`None`: not such a prefix).
fn foreign_syntax(s: &str) -> Option<RegistryError> {
    let bad = |fix: String| {
        Some(RegistryError::BadReference {
            reference: s.to_owned(),
            why: "it is written in another tool's syntax".to_owned(),
            fix: Some(fix),
        })
    };
    // What the reference would be without the prefix, if that is one.
    let plain = |rest: &str| Reference::parse(rest).is_ok().then(|| rest.to_owned());
    for (prefix, what) in [
        ("docker://", "skopeo's and podman's transport"),
        ("https://", "a URL scheme; HTTPS is the default"),
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            return bad(match plain(rest) {
                Some(r) => format!("drop `{prefix}` ({what}): write `{r}`"),
                None => format!(
                    "drop `{prefix}` ({what}) and write `host[:port]/repository[:tag|@sha256:…]`"
                ),
            });
        }
    }
    if let Some(rest) = s.strip_prefix("http://") {
        return bad(match plain(rest) {
            Some(r) => format!(
                "drop `http://` (a URL scheme) and add `--plain-http`: write `{r} --plain-http`"
            ),
            None => "drop `http://` (a URL scheme), write `host[:port]/repository[:tag|@sha256:…]` and add `--plain-http`".to_owned(),
        });
    }
    // skopeo's other transports (containers-transports(5)). `NAME:` followed by digits up
    // to the first `/` is a host and port instead (`oci:5000/k/m`).
    let (name, rest) = s.split_once(':')?;
    let port = rest.split('/').next().unwrap_or_default();
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match name {
        "oci" => {
            // `oci:PATH[:REFERENCE]`.
            let path = rest.split_once(':').map_or(rest, |(p, _)| p);
            bad(format!(
                "`oci:` is skopeo's transport for a layout directory: for `{path}` use `kbuild import {path}` or `kbuild export --output {path}`; a registry reference is `host[:port]/repository[:tag]`"
            ))
        }
        "oci-archive" | "dir" | "docker-archive" => bad(format!(
            "`{name}:` is skopeo's transport for a local {}: kbuild reads and writes OCI layout directories (`kbuild import DIR`, `kbuild export --output DIR`) and registries (`host[:port]/repository[:tag]`)",
            if name == "dir" {
                "directory"
            } else {
                "archive"
            }
        )),
        "docker-daemon" | "containers-storage" => bad(format!(
            "`{name}:` is skopeo's transport for a local container engine's images: write a registry reference, `host[:port]/repository[:tag|@sha256:…]`"
        )),
        _ => None,
    }
}

/// Whether `t` is a tag the distribution spec allows (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
pub fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// How many blobs and bytes moved, and how many were already where they were going.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    pub sent_blobs: usize,
    pub sent_bytes: u64,
    pub present_blobs: usize,
    pub present_bytes: u64,
    /// Blobs the registry took from another repository of its own (cross-repository mount)
    /// instead of an upload.
    pub mounted_blobs: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_cannot_be_written_gets_a_help_line() {
        for kind in [
            std::io::ErrorKind::ReadOnlyFilesystem,
            std::io::ErrorKind::PermissionDenied,
        ] {
            let h = RegistryError::Io(std::io::Error::from(kind)).help();
            assert!(
                h.as_deref()
                    .is_some_and(|h| h.starts_with("the store cannot be written here")),
                "{kind:?}: {h:?}"
            );
        }
        assert_eq!(
            RegistryError::Io(std::io::Error::other("disk on fire")).help(),
            None
        );
    }

    #[test]
    fn a_failed_export_write_is_not_blamed_on_the_store() {
        let write = |kind| RegistryError::ExportWrite {
            dir: PathBuf::from("/media/usb/m1"),
            source: std::io::Error::from(kind),
        };
        let full = write(std::io::ErrorKind::StorageFull).help().unwrap();
        assert!(full.starts_with("free space there"), "{full}");
        let denied = write(std::io::ErrorKind::PermissionDenied).help().unwrap();
        assert!(denied.starts_with("export where you can write"), "{denied}");
        assert_eq!(write(std::io::ErrorKind::Other).help(), None);
    }

    #[test]
    fn references_parse_into_registry_repository_tag_and_digest() {
        let r = Reference::parse("127.0.0.1:5000/kbuild/masters:master-1-2").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "kbuild/masters");
        assert_eq!(r.tag.as_deref(), Some("master-1-2"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/kbuild/masters:master-1-2");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("reg.example/k@{d}")).unwrap();
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        let r = Reference::parse("reg.example/k")
            .unwrap()
            .or_tag("default-3");
        assert_eq!(r.to_string(), "reg.example/k:default-3");
    }

    #[test]
    fn parallel_map_keeps_order_and_reports_an_error() {
        let items: Vec<u64> = (0..50).collect();
        let doubled = parallel_map(&items, |i| Ok(i * 2)).unwrap();
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let err = parallel_map(&items, |i| {
            if *i == 17 {
                Err(RegistryError::MissingBlob {
                    what: "x".into(),
                    digest: "d".into(),
                })
            } else {
                Ok(*i)
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "blob `d` of x is missing");
        assert!(parallel_map(&[] as &[u64], |i| Ok(*i)).unwrap().is_empty());
    }

    #[test]
    fn bad_references_say_why() {
        for (s, why) in [
            ("justaname", "no `/repository`"),
            ("reg/Upper", "lowercase"),
            ("reg/k:-x", "tag"),
            ("reg/k@md5:00", "sha256"),
            ("reg/../x", "lowercase"),
        ] {
            match Reference::parse(s) {
                Err(RegistryError::BadReference { why: w, .. }) => {
                    assert!(w.contains(why), "{s}: {w}")
                }
                other => panic!("{s}: {other:?}"),
            }
        }
    }
}

/// `f` applied to every item on up to 4 threads (the machine's parallelism), results in the
/// items' order; the first error stops the others from starting new items.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, RegistryError> + Sync,
) -> Result<Vec<R>, RegistryError> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4)
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    let error: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    match f(&items[i]) {
                        Ok(r) => results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect())
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// The name `index.json` gives the manifest: `<profile>-<generation>`.
    pub tag: String,
    pub objects: usize,
    /// Bytes of all blobs written.
    pub bytes: u64,
}

/// Writes generation `g` as an OCI image layout into `dir`, which must not exist or be an
/// empty directory. Everything is written into the staging directory `DIR.kbuild-tmp`
/// ([`layout::ExportStaging`]), synced, and renamed to `dir` at the end: `dir` appears
/// complete or not at all, and a killed export leaves only the staging directory, which the
/// next export to `dir` empties and reuses.
pub fn export(
    store: &Store,
    g: &Generation,
    dir: &Path,
    observer: &dyn Observer,
) -> Result<Exported, RegistryError> {
    // Shared, as a build: gc cannot remove the objects while they are read.
    let _lock = store.lock(LockMode::Shared, observer)?;
    let staging = layout::ExportStaging::take(dir, observer)?;
    // Not `Io`: its help is about the store, and these are writes to where the export goes
    // (a full stick, a directory of someone else's).
    let write = |source| RegistryError::ExportWrite {
        dir: dir.to_owned(),
        source,
    };
    let tmp = staging.path();
    layout::init(tmp).map_err(write)?;
    let blobs = tmp.join("blobs/sha256");
    let art = artifact::describe(store, g, |name, path| {
        // A temp name inside the staging directory, synced by `compress_file`, then renamed
        // to its digest (the directories are synced once, before the final rename).
        let part = blobs.join(format!(".tmp-{name}"));
        let p = artifact::compress_file(path, &part, artifact::Durable::Synced).map_err(write)?;
        let dest = layout::blob_path(tmp, &p.blob).expect("sha256");
        crate::fs::rename_synced(&part, &dest).map_err(write)?;
        crate::activate::fault::point("export: a blob written");
        Ok(p)
    })?;
    let bytes: u64 = art.manifest.layers.iter().map(|l| l.size).sum();
    layout::put_blob(tmp, &art.manifest.config.digest, &art.config_bytes).map_err(write)?;
    layout::put_blob(tmp, &art.manifest_digest, &art.manifest_bytes).map_err(write)?;
    let tag = default_tag(g);
    layout::write_index(
        tmp,
        &art.manifest_digest,
        art.manifest_bytes.len() as u64,
        &tag,
    )
    .map_err(write)?;
    crate::activate::fault::point("export: the layout written, not yet renamed");
    staging.publish()?;
    crate::activate::fault::pause("export: published");
    Ok(Exported {
        digest: art.manifest_digest,
        tag,
        objects: art.config.objects.len(),
        bytes: bytes + art.config_bytes.len() as u64 + art.manifest_bytes.len() as u64,
    })
}

/// Imports the OCI layout at `dir` (an export, or `skopeo copy … oci:DIR`) into the store at
/// `store_dir`: the manifest and config are checked first (a store is made on a new host only
/// for a layout that passes), every object is checked before it becomes visible, then the
/// generation is recorded in `profile`, else the one it was exported from.
pub fn import(
    store_dir: &Path,
    dir: &Path,
    profile: Option<&str>,
    observer: &dyn Observer,
) -> Result<(Store, Imported), RegistryError> {
    let (manifest, _digest) = layout::read_manifest(dir)?;
    let what = format!("layout `{}`", dir.display());
    let checked = import::check_layout(dir, &manifest, &what)?;
    let store = Store::open(store_dir)?;
    let imported = import::add_checked(&store, dir, &checked, &what, profile, observer)?;
    Ok((store, imported))
}

/// The tag a generation gets when none is given: `<profile>-<generation>`.
pub fn default_tag(g: &Generation) -> String {
    format!("{}-{}", g.profile, g.number)
}
