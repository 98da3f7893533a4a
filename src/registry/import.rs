//! Turning a staged artifact (an OCI layout directory: an export, or a pull's staging area)
//! into store objects, a rootfs and a generation record.
//!
//! Order, so that nothing unchecked or partial becomes visible:
//! 1. [`check_manifest`], [`check_config`] (or [`check_layout`]): the manifest and config are
//!    parsed and refused if hostile (unknown format, escaping or duplicate names, absurd
//!    sizes, a blob the manifest does not list); each object's claimed size, executable bit and BLAKE3 must hash to its name, and the rootfs
//!    tree built from those claims must hash to the rootfs's name — before any blob is read.
//! 2. Each missing object's blob is checked against its sha256 while it is decompressed into
//!    a temp entry of the store (capped at its declared size), and the bytes against the
//!    object's BLAKE3; only after every object passed are they added (one `syncfs`, then the
//!    store's rename-no-replace add).
//! 3. The rootfs is rebuilt from its tree (hardlinks to the objects) in a temp entry, checked
//!    against its name, and added the same way.
//! 4. The generation is recorded with the same code (and record format) as a local build.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::RegistryError;
use super::artifact::{
    self, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, CONFIG_VERSION, Config, MANIFEST_MEDIA_TYPE,
    MAX_METADATA_SIZE, MAX_OBJECT_SIZE, MAX_TEXT_SIZE, Manifest, OBJECT_MEDIA_TYPE, TreeEntry,
};
use super::layout;
use crate::generation::{NewGeneration, Recorded};
use crate::observe::Observer;
use crate::store::{LockMode, Node, ObjectMeta, Store, StorePath};

/// What an import (or pull) recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub profile: String,
    /// The generation number in this store (`Unchanged`: the newest one already was it).
    pub recorded: Recorded,
    pub rootfs: StorePath,
    /// Objects added to the store, and objects it already had.
    pub added: usize,
    pub present: usize,
}

/// A checked artifact: its manifest and config.
#[derive(Clone, Debug)]
pub struct Checked {
    pub manifest: Manifest,
    pub config: Config,
}

fn refuse(what: &str, why: impl Into<String>) -> RegistryError {
    RegistryError::Refused {
        what: what.to_owned(),
        why: why.into(),
    }
}

/// Parses and checks a manifest (see the module docs, step 1). `what` names the artifact in
/// errors (the layout directory or the reference).
pub fn check_manifest(bytes: &[u8], what: &str) -> Result<Manifest, RegistryError> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
        refuse(
            what,
            format!("its manifest is not an OCI image manifest: {e}"),
        )
    })?;
    if m.schema_version != 2 || m.media_type != MANIFEST_MEDIA_TYPE {
        return Err(refuse(
            what,
            format!(
                "its manifest is not an OCI image manifest (schemaVersion {}, mediaType `{}`)",
                m.schema_version, m.media_type
            ),
        ));
    }
    if m.artifact_type != ARTIFACT_TYPE || m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(refuse(
            what,
            format!(
                "it is not a kbuild generation (artifactType `{}`, config `{}`; kbuild reads `{ARTIFACT_TYPE}`)",
                m.artifact_type, m.config.media_type
            ),
        ));
    }
    if m.config.size > MAX_METADATA_SIZE || artifact::digest_hex(&m.config.digest).is_none() {
        return Err(refuse(
            what,
            format!(
                "its config blob `{}` declares {} bytes (at most {MAX_METADATA_SIZE})",
                m.config.digest, m.config.size
            ),
        ));
    }
    for l in &m.layers {
        if artifact::digest_hex(&l.digest).is_none() || l.media_type != OBJECT_MEDIA_TYPE {
            return Err(refuse(
                what,
                format!(
                    "layer `{}` of type `{}` is no kbuild object blob",
                    l.digest, l.media_type
                ),
            ));
        }
    }
    Ok(m)
}

/// Parses and checks the config against its manifest (module docs, step 1).
pub fn check_config(m: Manifest, bytes: &[u8], what: &str) -> Result<Checked, RegistryError> {
    let config: Config = serde_json::from_slice(bytes)
        .map_err(|e| refuse(what, format!("its config is not a kbuild generation: {e}")))?;
    if config.version != CONFIG_VERSION {
        return Err(refuse(
            what,
            format!(
                "its config has format version {}, this kbuild reads {CONFIG_VERSION}",
                config.version
            ),
        ));
    }
    if !crate::generation::valid_profile(&config.profile) {
        return Err(refuse(
            what,
            format!("`{}` is not a profile name", config.profile),
        ));
    }
    let layers: BTreeMap<&str, u64> = m
        .layers
        .iter()
        .map(|l| (l.digest.as_str(), l.size))
        .collect();
    let mut nodes = BTreeMap::new();
    for o in &config.objects {
        let name = &o.name;
        if o.size > MAX_OBJECT_SIZE {
            return Err(refuse(
                what,
                format!(
                    "object `{name}` declares {} bytes (at most {MAX_OBJECT_SIZE})",
                    o.size
                ),
            ));
        }
        // zstd never grows data by more than a small margin (ZSTD_compressBound).
        if o.blob_size > o.size + o.size / 128 + (1 << 16) {
            return Err(refuse(
                what,
                format!(
                    "object `{name}` declares a blob of {} bytes for {} bytes",
                    o.blob_size, o.size
                ),
            ));
        }
        if layers.get(o.blob.as_str()) != Some(&o.blob_size) {
            return Err(refuse(
                what,
                format!(
                    "object `{name}`: blob `{}` ({} bytes) is not a layer of the manifest",
                    o.blob, o.blob_size
                ),
            ));
        }
        let node = o
            .node()
            .ok_or_else(|| refuse(what, format!("object `{name}` has no BLAKE3 digest")))?;
        if node.digest().store_hash() != name.hash_part() {
            return Err(refuse(
                what,
                format!("object `{name}`: its declared content does not hash to its name"),
            ));
        }
        if nodes.insert(name.clone(), node).is_some() {
            return Err(refuse(what, format!("object `{name}` is listed twice")));
        }
    }
    let root = tree_node(&config, &nodes, what)?;
    if root.digest().store_hash() != config.rootfs.name.hash_part() {
        return Err(refuse(
            what,
            format!(
                "the rootfs tree does not hash to its name `{}`",
                config.rootfs.name
            ),
        ));
    }
    Ok(Checked {
        manifest: m,
        config,
    })
}

/// The rootfs node the tree describes, checking every path and link on the way.
fn tree_node(
    config: &Config,
    objects: &BTreeMap<StorePath, Node>,
    what: &str,
) -> Result<Node, RegistryError> {
    let mut root = Node::Directory(BTreeMap::new());
    let mut used = BTreeSet::new();
    for (path, entry) in &config.rootfs.tree {
        let parts: Vec<&str> = path.split('/').collect();
        if parts
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
        {
            return Err(refuse(
                what,
                format!("rootfs path `{path}` is not a plain relative path"),
            ));
        }
        if let Some((parent, _)) = path.rsplit_once('/')
            && config.rootfs.tree.get(parent) != Some(&TreeEntry::Directory)
        {
            return Err(refuse(
                what,
                format!("rootfs path `{path}` has no directory `{parent}`"),
            ));
        }
        let node = match entry {
            TreeEntry::Directory => Node::Directory(BTreeMap::new()),
            TreeEntry::Symlink { target } => {
                if !link_stays_inside(&config.rootfs.tree, path, target) {
                    return Err(refuse(
                        what,
                        format!(
                            "rootfs link `{path}` → `{target}` points outside the rootfs or \
                             loops (followed through the tree's other links)"
                        ),
                    ));
                }
                Node::Symlink {
                    target: target.clone().into_bytes(),
                }
            }
            TreeEntry::Object { object } => {
                used.insert(object.clone());
                objects.get(object).cloned().ok_or_else(|| {
                    refuse(
                        what,
                        format!(
                            "rootfs path `{path}` names object `{object}`, which is not listed"
                        ),
                    )
                })?
            }
            TreeEntry::Text { text, executable } => {
                if text.len() > MAX_TEXT_SIZE {
                    return Err(refuse(
                        what,
                        format!("rootfs text `{path}` is {} bytes", text.len()),
                    ));
                }
                Node::file(text.as_bytes(), *executable)
            }
        };
        insert(&mut root, &parts, node);
    }
    if let Some(unused) = objects.keys().find(|o| !used.contains(*o)) {
        return Err(refuse(
            what,
            format!("object `{unused}` is listed but the rootfs does not use it"),
        ));
    }
    Ok(root)
}

fn insert(dir: &mut Node, parts: &[&str], node: Node) {
    let Node::Directory(entries) = dir else {
        return;
    };
    match parts {
        [] => {}
        [last] => {
            // A directory listed after its children keeps them.
            if !matches!(node, Node::Directory(_)) || !entries.contains_key(last.as_bytes()) {
                entries.insert(last.as_bytes().to_vec(), node);
            }
        }
        [first, rest @ ..] => {
            let child = entries
                .entry(first.as_bytes().to_vec())
                .or_insert_with(|| Node::Directory(BTreeMap::new()));
            insert(child, rest, node);
        }
    }
}

/// How many links one resolution may follow: Linux's `MAXSYMLINKS` (40); a longer chain, or a
/// cycle, is refused.
const MAX_LINK_HOPS: usize = 40;

/// Whether the relative link at `path` with `target` resolves inside the rootfs when followed
/// the way the kernel follows it: component by component, each component that is itself a link
/// of `tree` replaced by its target (resolved from that link's directory) before a later `..`
/// applies. Lexical against `tree` only (nothing on disk is read; the tree is all the rootfs
/// will hold). Without following the other links, `etc/b → a/../..` with `etc/a → ../usr`
/// looks like it stays at the rootfs's top, but the kernel climbs to the store directory.
fn link_stays_inside<'a>(
    tree: &'a BTreeMap<String, TreeEntry>,
    path: &'a str,
    target: &'a str,
) -> bool {
    // The directory resolved so far (components below the rootfs), and the components still
    // to walk, last first.
    let mut resolved: Vec<&'a str> = path.split('/').collect();
    resolved.pop();
    let mut pending: Vec<&'a str> = Vec::new();
    if !push_link_target(&mut pending, target) {
        return false;
    }
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c {
            "" | "." => {}
            ".." => {
                if resolved.pop().is_none() {
                    return false;
                }
            }
            name => {
                resolved.push(name);
                if let Some(TreeEntry::Symlink { target }) = tree.get(&resolved.join("/")) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return false;
                    }
                    resolved.pop();
                    if !push_link_target(&mut pending, target) {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// Queues the components of a link target (relative, non-empty, no NUL; else `false`).
fn push_link_target<'a>(pending: &mut Vec<&'a str>, target: &'a str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    pending.extend(target.split('/').rev());
    true
}

/// The objects of `config` the store lacks (by name, sorted).
pub fn missing_objects<'a>(store: &Store, config: &'a Config) -> Vec<&'a artifact::Object> {
    config
        .objects
        .iter()
        .filter(|o| !store.contains(&o.name))
        .collect()
}

/// Step 1 of the module docs for the layout at `dir` whose manifest is `manifest`: the
/// manifest, and the config blob read from the layout.
pub fn check_layout(dir: &Path, manifest: &[u8], what: &str) -> Result<Checked, RegistryError> {
    let m = check_manifest(manifest, what)?;
    let config_path = layout::blob_path(dir, &m.config.digest).expect("checked");
    let config_bytes = match layout::read_capped(&config_path, MAX_METADATA_SIZE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegistryError::MissingBlob {
                what: what.to_owned(),
                digest: m.config.digest.clone(),
            });
        }
        Err(source) => {
            return Err(RegistryError::Layout {
                dir: dir.to_owned(),
                source,
            });
        }
    };
    let actual = artifact::sha256_digest(&config_bytes);
    if actual != m.config.digest {
        return Err(RegistryError::DigestMismatch {
            what: format!("the config of {what}"),
            digest: m.config.digest.clone(),
            actual,
            from_registry: false,
        });
    }
    check_config(m, &config_bytes, what)
}

/// What the config records as a generation.
fn new_generation(config: &Config) -> NewGeneration {
    NewGeneration {
        rootfs: config.rootfs.name.clone(),
        recipes: config.recipes.clone(),
        variables: config.variables.clone(),
        inputs: config.inputs.clone(),
        prerequisites: config.prerequisites.clone(),
        hosts: config.hosts.clone(),
        origins: config.origins.clone(),
    }
}

/// The import of a checked artifact when it has nothing to do: every object and the rootfs
/// are in the store and the profile's newest generation is this one (`Recorded::Unchanged`).
/// Found by reading alone, so a store that cannot be written (a read-only mount, a v1 layout
/// read in place) answers it as a writable one does. The caller holds the store's shared
/// lock, so gc cannot remove what was found before the answer is given.
pub fn already_recorded(
    store: &Store,
    checked: &Checked,
    profile: Option<&str>,
) -> Result<Option<Imported>, RegistryError> {
    let config = &checked.config;
    let profile = profile.unwrap_or(&config.profile);
    if !missing_objects(store, config).is_empty() || !rootfs_whole(store, config)? {
        return Ok(None);
    }
    let Some(n) = crate::generation::newest_if_same(store, profile, &new_generation(config))?
    else {
        return Ok(None);
    };
    Ok(Some(Imported {
        profile: profile.to_owned(),
        recorded: Recorded::Unchanged(n),
        rootfs: config.rootfs.name.clone(),
        added: 0,
        present: config.objects.len(),
    }))
}

/// Steps 2–4 of the module docs for an artifact [`check_config`] passed, its blobs read from
/// the layout at `dir`.
pub fn add_checked(
    store: &Store,
    dir: &Path,
    checked: &Checked,
    what: &str,
    profile: Option<&str>,
    observer: &dyn Observer,
) -> Result<Imported, RegistryError> {
    let config = &checked.config;
    // Shared, as a build: gc (exclusive) cannot delete objects between their add and the
    // generation record that keeps them. (A lock file that exists is locked read-only on a
    // store that cannot be written.)
    let _lock = store.lock(LockMode::Shared, observer)?;
    if let Some(done) = already_recorded(store, checked, profile)? {
        return Ok(done);
    }
    store.require_writable_layout()?;
    store.remove_abandoned(observer);
    let missing = missing_objects(store, config);
    let present = config.objects.len() - missing.len();
    let scratch = store.scratch()?;
    // Blobs are independent: decompressed and hashed on several threads.
    let numbered: Vec<(usize, Vec<&artifact::Object>)> =
        by_blob(&missing).into_iter().enumerate().collect();
    let staged = super::parallel_map(&numbered, |(i, objects)| {
        let o = objects[0];
        let blob = layout::blob_path(dir, &o.blob).expect("checked");
        let file = match layout::open_regular(&blob) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::MissingBlob {
                    what: format!("object `{}` of {what}", o.name),
                    digest: o.blob.clone(),
                });
            }
            Err(source) => {
                return Err(RegistryError::Layout {
                    dir: dir.to_owned(),
                    source,
                });
            }
        };
        let len = file.metadata()?.len();
        if len != o.blob_size {
            return Err(RegistryError::SizeMismatch {
                what: format!("object `{}` of {what}", o.name),
                digest: o.blob.clone(),
                actual: format!("a file of {len} bytes"),
                declared: o.blob_size,
            });
        }
        let dests: Vec<_> = (0..objects.len())
            .map(|j| scratch.path().join(format!("object-{i}-{j}")))
            .collect();
        decode_objects(std::io::BufReader::new(file), objects, &dests, what)?;
        Ok(objects.iter().copied().zip(dests).collect::<Vec<_>>())
    })?;
    let staged: Vec<_> = staged.into_iter().flatten().collect();
    crate::activate::fault::point("import: objects decompressed into a scratch entry");
    let imported = add_staged(store, &staged, config, present, profile, observer)?;
    drop(scratch);
    Ok(imported)
}

/// `objects` grouped by blob (objects with the same bytes and another executable bit share
/// one), in order of their first object.
pub fn by_blob<'a>(objects: &[&'a artifact::Object]) -> Vec<Vec<&'a artifact::Object>> {
    let mut groups: Vec<Vec<&artifact::Object>> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for o in objects {
        match index.get(o.blob.as_str()) {
            Some(&i) => groups[i].push(o),
            None => {
                index.insert(&o.blob, groups.len());
                groups.push(vec![o]);
            }
        }
    }
    groups
}

/// Step 2 of the module docs for one blob: decompresses the blob bytes read from `input`
/// into `dests[0]` while hashing them (sha256, against the blob's digest) and hashing what
/// they decode to (BLAKE3, output capped at the declared size), then checks each object of
/// `objects` (all of that blob) against its name and gives `dests[i]` the bytes and mode of
/// `objects[i]` (the first decoded, the others copies). Files are not synced (the caller syncs
/// a batch). On an error nothing is left at `dests`.
///
/// The same path serves `import DIR` (a blob file) and `pull` (bytes as they arrive from the
/// registry), so both refuse the same things the same way.
pub fn decode_objects(
    input: impl std::io::Read,
    objects: &[&artifact::Object],
    dests: &[std::path::PathBuf],
    what: &str,
) -> Result<(), RegistryError> {
    let result = decode_objects_inner(input, objects, dests, what);
    if result.is_err() {
        for d in dests {
            let _ = std::fs::remove_file(d);
        }
    }
    result
}

fn decode_objects_inner(
    input: impl std::io::Read,
    objects: &[&artifact::Object],
    dests: &[std::path::PathBuf],
    what: &str,
) -> Result<(), RegistryError> {
    use std::os::unix::fs::PermissionsExt as _;
    let first = objects[0];
    let mut reader = HashingReader::new(input);
    let result = artifact::decompress_to(&mut reader, &dests[0], first.size);
    // Whatever the decoder made of them, the bytes must be the blob's.
    let (blob_digest, blob_size) = reader.finish();
    if blob_digest != first.blob {
        return Err(RegistryError::DigestMismatch {
            what: format!("object `{}` of {what}", first.name),
            digest: first.blob.clone(),
            actual: blob_digest,
            from_registry: false,
        });
    }
    if blob_size != first.blob_size {
        return Err(RegistryError::SizeMismatch {
            what: format!("object `{}` of {what}", first.name),
            digest: first.blob.clone(),
            actual: format!("{blob_size} bytes"),
            declared: first.blob_size,
        });
    }
    let (size, contents) = result.map_err(|e| {
        refuse(
            what,
            format!("object `{}` does not decompress: {e}", first.name),
        )
    })?;
    for (i, (o, dest)) in objects.iter().zip(dests).enumerate() {
        let node = Node::File {
            executable: o.executable,
            size,
            contents,
        };
        if Some(&node) != o.node().as_ref() {
            return Err(refuse(
                what,
                format!("object `{}`: its bytes do not hash to its name", o.name),
            ));
        }
        if i > 0 {
            fs_err::copy(&dests[0], dest)?;
        }
        let mode = if o.executable { 0o755 } else { 0o644 };
        fs_err::set_permissions(dest, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Steps 2 (end) to 4 of the module docs: adds the objects checked into temp entries of the
/// store (`staged`: each object and its file), one `syncfs` first; rebuilds the rootfs and
/// records the generation in `profile`, else the one it was built in. `present`: how many of
/// the config's objects the store already had. The caller holds the store's shared lock.
pub fn add_staged(
    store: &Store,
    staged: &[(&artifact::Object, std::path::PathBuf)],
    config: &Config,
    present: usize,
    profile: Option<&str>,
    observer: &dyn Observer,
) -> Result<Imported, RegistryError> {
    if !staged.is_empty() {
        store.sync()?;
    }
    for (o, tmp) in staged {
        let node = o.node().expect("checked");
        let meta = ObjectMeta {
            version: crate::store::META_VERSION,
            digest: node.digest().to_hex(),
            deriver: o.deriver.clone(),
            references: vec![],
            shape: crate::store::shape_of(&node),
        };
        store.add(tmp, &o.name, &meta)?;
    }
    add_rootfs(store, config)?;
    let profile = profile.unwrap_or(&config.profile).to_owned();
    let recorded = crate::generation::record(store, &profile, new_generation(config), observer)?;
    Ok(Imported {
        profile,
        recorded,
        rootfs: config.rootfs.name.clone(),
        added: staged.len(),
        present,
    })
}

/// The config's objects by name, and the rootfs node its tree describes.
fn rootfs_node(config: &Config) -> Result<(BTreeMap<StorePath, Node>, Node), RegistryError> {
    let objects: BTreeMap<StorePath, Node> = config
        .objects
        .iter()
        .filter_map(|o| Some((o.name.clone(), o.node()?)))
        .collect();
    let root = tree_node(config, &objects, "the rootfs")?;
    Ok((objects, root))
}

/// Whether the store has the rootfs whole (its shape as the tree describes it).
fn rootfs_whole(store: &Store, config: &Config) -> Result<bool, RegistryError> {
    let (_, root) = rootfs_node(config)?;
    Ok(store.check_shape(&config.rootfs.name, &root) == Ok(true))
}

/// Rebuilds the rootfs from its tree unless the store has it whole.
fn add_rootfs(store: &Store, config: &Config) -> Result<(), RegistryError> {
    use std::os::unix::fs::PermissionsExt as _;
    let (objects, root) = rootfs_node(config)?;
    let name = &config.rootfs.name;
    match store.check_shape(name, &root) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(_) => {
            // A damaged copy under the name: moved off it, as a build does.
            store.move_aside(name)?;
        }
    }
    let top_dir = store.scratch()?;
    let top = top_dir.path();
    for (path, entry) in &config.rootfs.tree {
        let dest = top.join(path);
        match entry {
            TreeEntry::Directory => fs_err::create_dir_all(&dest)?,
            TreeEntry::Symlink { target } => {
                fs_err::os::unix::fs::symlink(target, &dest)?;
                crate::fs::set_mtime(&dest)?;
            }
            TreeEntry::Object { object } => {
                let from = store.path_of(object);
                if let Err(e) = std::fs::hard_link(&from, &dest) {
                    // Another filesystem or a link limit: a copy (as a build does).
                    if e.kind() == std::io::ErrorKind::NotFound {
                        return Err(
                            crate::fs::annotate(e, "hardlink into the rootfs", &dest).into()
                        );
                    }
                    fs_err::copy(&from, &dest)?;
                }
            }
            TreeEntry::Text { text, executable } => {
                fs_err::write(&dest, text)?;
                let mode = if *executable { 0o755 } else { 0o644 };
                fs_err::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
            }
        }
    }
    store.sync()?;
    crate::activate::fault::point("import: rootfs assembled in a scratch entry");
    let meta = ObjectMeta {
        version: crate::store::META_VERSION,
        digest: root.digest().to_hex(),
        deriver: "rootfs".into(),
        references: objects.keys().cloned().collect(),
        shape: crate::store::shape_of(&root),
    };
    store.add(top, name, &meta)?;
    drop(top_dir);
    store.sync_dir()?;
    Ok(())
}

/// A reader that hashes (sha256) and counts what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
}

impl<R: std::io::Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        use sha2::Digest as _;
        HashingReader {
            inner,
            hasher: sha2::Sha256::new(),
            count: 0,
        }
    }

    /// `(sha256:<hex>, bytes)` of everything the underlying reader holds (the rest is read
    /// too; a read error ends it, and the digest then tells).
    fn finish(mut self) -> (String, u64) {
        use sha2::Digest as _;
        let _ = std::io::copy(&mut self, &mut std::io::sink());
        (
            format!("sha256:{}", artifact::hex(&self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(&str, Option<&str>)]) -> BTreeMap<String, TreeEntry> {
        entries
            .iter()
            .map(|(path, link)| {
                let entry = match link {
                    Some(target) => TreeEntry::Symlink {
                        target: target.to_string(),
                    },
                    None => TreeEntry::Directory,
                };
                (path.to_string(), entry)
            })
            .collect()
    }

    /// An object of `data` and its blob (compressed as a push does).
    fn object(dir: &Path, data: &[u8], executable: bool) -> (artifact::Object, Vec<u8>) {
        let src = dir.join("src");
        std::fs::write(&src, data).unwrap();
        let p =
            artifact::compress_file(&src, &dir.join("blob"), artifact::Durable::Scratch).unwrap();
        let node = Node::file(data, executable);
        let o = artifact::Object {
            name: StorePath::new(node.digest(), "obj").unwrap(),
            blob: p.blob,
            blob_size: p.blob_size,
            size: p.size,
            executable,
            blake3: p.blake3.to_hex(),
            deriver: "test".into(),
        };
        (o, std::fs::read(dir.join("blob")).unwrap())
    }

    #[test]
    fn decoding_a_blob_checks_its_digest_and_the_objects_of_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let (plain, blob) = object(dir.path(), &data, false);
        let mut exe = plain.clone();
        exe.executable = true;
        let dests = [dir.path().join("a"), dir.path().join("b")];
        // Two objects of one blob: one decode, both checked, each with its mode.
        decode_objects(&blob[..], &[&plain, &exe], &dests, "`test`").unwrap();
        for (d, mode) in dests.iter().zip([0o644, 0o755]) {
            assert_eq!(std::fs::read(d).unwrap(), data);
            let md = std::fs::metadata(d).unwrap();
            assert_eq!(md.permissions().mode() & 0o777, mode, "{}", d.display());
        }

        // One byte of the blob changed, in a frame that still decodes: refused by its
        // digest, with the digest it has, and nothing left behind.
        let mut bad = blob.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let out = [dir.path().join("c")];
        let e = decode_objects(&bad[..], &[&plain], &out, "`test`").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "blob `{}` of object `{}` of `test` does not match its digest (got `{}`)",
                plain.blob,
                plain.name,
                artifact::sha256_digest(&bad)
            )
        );
        assert!(!out[0].exists());
        // Cut short (a registry that died): the same refusal, nothing left.
        let e = decode_objects(&blob[..blob.len() / 2], &[&plain], &out, "`test`").unwrap_err();
        assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
        assert!(!out[0].exists());
        // The right blob for another claim (its BLAKE3): refused by name.
        let mut liar = plain.clone();
        liar.blake3 = blake3::hash(b"other").to_hex().to_string();
        let e = decode_objects(&blob[..], &[&liar], &out, "`test`").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "`test` refused: object `{}`: its bytes do not hash to its name",
                liar.name
            )
        );
        assert!(!out[0].exists());
    }

    #[test]
    fn links_may_not_climb_out_of_the_rootfs() {
        let none = BTreeMap::new();
        assert!(link_stays_inside(
            &none,
            "etc/systemd/system/multi-user.target.wants/etcd.service",
            "../etcd.service"
        ));
        assert!(link_stays_inside(&none, "a/b", "../c"));
        assert!(!link_stays_inside(&none, "a/b", "../../c"));
        assert!(!link_stays_inside(&none, "a", "/etc/shadow"));
        assert!(!link_stays_inside(&none, "a", ""));
    }

    #[test]
    fn links_are_followed_through_the_other_links_of_the_tree() {
        let t = tree(&[
            ("etc", None),
            ("usr", None),
            ("usr/lib", None),
            ("usr/lib/x", None),
            ("etc/a", Some("../usr")),
            // Lexically depth 1 → 2 → 1 → 0, but `a` is `usr`: usr/.. is the rootfs, then `..`.
            ("etc/b", Some("a/../..")),
            // A valid chain through `a`.
            ("etc/ok", Some("a/lib")),
            // Three hops: up → lib2 → top (the rootfs itself, fine), then one `..` too many.
            ("usr/lib/x/top", Some("../../..")),
            ("usr/lib/lib2", Some("x/top")),
            ("etc/up", Some("../usr/lib/lib2")),
            ("etc/root", Some("up/..")),
            ("etc/at-top", Some("up/etc")),
            // A cycle.
            ("etc/c1", Some("c2/x")),
            ("etc/c2", Some("c1")),
        ]);
        assert!(!link_stays_inside(&t, "etc/b", "a/../.."));
        assert!(link_stays_inside(&t, "etc/a", "../usr"));
        assert!(link_stays_inside(&t, "etc/ok", "a/lib"));
        assert!(link_stays_inside(&t, "etc/up", "../usr/lib/lib2"));
        assert!(link_stays_inside(&t, "etc/at-top", "up/etc"));
        assert!(!link_stays_inside(&t, "etc/root", "up/.."));
        assert!(!link_stays_inside(&t, "etc/c1", "c2/x"));
    }
}
