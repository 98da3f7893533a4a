//! Push and pull over the OCI distribution API, with `oci-client` (the maintained client of
//! the oras/krustlet lineage) on a current-thread tokio runtime that lives only inside the
//! calls here: the rest of kbuild stays synchronous.
//!
//! Push describes the generation, compressing each object into a temp entry of the store on
//! worker threads while this thread sends each blob as soon as it is ready: it asks the
//! registry (`HEAD /v2/<name>/blobs/<digest>`) which blobs it has, uploads the
//! others (monolithic `PUT`), then the config and the manifest. The manifest goes last, so a
//! registry that dies mid-push holds no tag for a partial generation, and a rerun uploads
//! only the blobs that did not arrive.
//!
//! Pull fetches the manifest and config, then only the blobs of objects the store lacks, up to
//! `DOWNLOADS` at once. Each blob's bytes go, as they arrive, through a bounded channel to a
//! blocking thread that hashes them (sha256, against the blob's digest), decompresses them
//! (capped at the object's declared size) and hashes the output (BLAKE3, against the object's
//! name) into `store/.tmp-pull-<manifest digest>/objects/.part-<name>`, renamed to `<name>`
//! once every check passed: one pass over the data, as it arrives. A rerun after a failure
//! checks the objects staged whole again and downloads only the other blobs. Once all are
//! staged, the import adds them (one `syncfs`, then the store's rename-no-replace add), rebuilds
//! the rootfs and records the generation, and the staging is removed.

use std::path::{Path, PathBuf};

use futures_util::{StreamExt as _, TryStreamExt as _};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};

use super::artifact::{self, MANIFEST_MEDIA_TYPE, MAX_METADATA_SIZE};
use super::auth::{self, Credentials, Resolved};
use super::import::{self, Imported};
use super::{Reference, RegistryError, Transfer, cache, layout, oauth};
use crate::generation::Generation;
use crate::observe::Observer;
use crate::store::{LockMode, Store, StorePath};

/// How to reach the registry.
#[derive(Clone, Debug, Default)]
pub struct RemoteOptions {
    /// Speak plain HTTP (only when asked: a registry on localhost or a lab network).
    pub plain_http: bool,
    /// A PEM file of CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The credentials file to use instead of the usual ones (see `auth`).
    pub authfile: Option<PathBuf>,
    /// `--offline`: refuse before any connection ([`RegistryError::Offline`]).
    pub offline: bool,
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct PushReport {
    /// The reference pushed (with its tag).
    pub reference: Reference,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    pub transfer: Transfer,
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct PullReport {
    pub digest: String,
    /// Object blobs downloaded vs objects already in the store (staged blobs from an earlier,
    /// interrupted pull count as downloaded with no bytes).
    pub transfer: Transfer,
    /// Blobs found staged by an earlier pull of the same manifest.
    pub resumed: usize,
    pub imported: Imported,
}

struct Session {
    client: Client,
    auth: RegistryAuth,
    resolved: Resolved,
    runtime: tokio::runtime::Runtime,
    oci_ref: oci_client::Reference,
    reference: Reference,
    /// The `--ca-file`'s PEM and `--plain-http`, for the identity-token exchange.
    ca_pem: Option<Vec<u8>>,
    plain_http: bool,
}

impl Session {
    fn open(
        reference: &Reference,
        opts: &RemoteOptions,
        observer: &dyn Observer,
    ) -> Result<Session, RegistryError> {
        if opts.offline {
            return Err(RegistryError::Offline {
                reference: reference.to_string(),
            });
        }
        let resolved = auth::resolve(
            &reference.registry,
            &reference.repository,
            opts.authfile.as_deref(),
            observer,
        )?;
        let auth = match &resolved.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            // Until `authenticate` exchanges it (when the registry asks for bearer tokens).
            Credentials::IdentityToken(t) => RegistryAuth::Bearer(t.clone()),
        };
        let mut extra = Vec::new();
        if let Some(ca) = &opts.ca_file {
            let data = fs_err::read(ca).map_err(|source| RegistryError::CaFile {
                path: ca.clone(),
                source,
            })?;
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let ca_pem = extra.first().map(|c| c.data.clone());
        let config = ClientConfig {
            protocol: if opts.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: extra,
            // One PUT per blob: chunked PATCHes buy nothing for blobs read from disk.
            use_monolithic_push: true,
            // As for fetches: how long the registry may stay silent (`KBUILD_HTTP_TIMEOUT`).
            connect_timeout: Some(crate::fetch::stall_timeout()),
            read_timeout: Some(crate::fetch::stall_timeout()),
            user_agent: concat!("kbuild/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        // reqwest is built without a crypto provider of its own: ring, as for ureq. Installing
        // it twice (a second session) is harmless, hence the ignored result.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::try_from(config).map_err(|e| match &opts.ca_file {
            Some(path) => RegistryError::CaFile {
                path: path.clone(),
                source: std::io::Error::other(e),
            },
            None => remote("connecting", reference, &resolved, e),
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let oci_ref = match (&reference.digest, &reference.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(
                reference.registry.clone(),
                reference.repository.clone(),
                d.clone(),
            ),
            (None, t) => oci_client::Reference::with_tag(
                reference.registry.clone(),
                reference.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".to_owned()),
            ),
        };
        Ok(Session {
            client,
            auth,
            resolved,
            runtime,
            oci_ref,
            reference: reference.clone(),
            ca_pem,
            plain_http: opts.plain_http,
        })
    }

    fn err(&self, what: &str, e: OciDistributionError) -> RegistryError {
        remote(what, &self.reference, &self.resolved, e)
    }

    /// Authenticates for `op`; an identity token is first exchanged for an access token
    /// (`oauth`), which is then what `oci-client` sends. The bearer token `oci-client` holds
    /// afterwards, if any.
    fn authenticate(
        &mut self,
        op: RegistryOperation,
        what: &str,
    ) -> Result<Option<String>, RegistryError> {
        if let Credentials::IdentityToken(refresh) = &self.resolved.credentials {
            let http = oauth::Http::new(
                self.ca_pem.as_deref(),
                crate::fetch::stall_timeout(),
                self.plain_http,
            )
            .map_err(|e| RegistryError::Remote {
                what: what.to_owned(),
                reference: self.reference.to_string(),
                source: Box::new(e),
            })?;
            let exchanged = self.runtime.block_on(http.exchange(
                &self.reference.registry,
                &self.reference.repository,
                op == RegistryOperation::Push,
                refresh,
            ));
            match exchanged {
                Ok(Some(access)) => self.auth = RegistryAuth::Bearer(access),
                Ok(None) => {}
                Err(e @ oauth::ExchangeError::Refused { .. }) => {
                    return Err(RegistryError::Unauthorized {
                        what: what.to_owned(),
                        reference: self.reference.to_string(),
                        anonymous: false,
                        credentials: self.resolved.describe(&self.reference.registry),
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    return Err(RegistryError::Remote {
                        what: what.to_owned(),
                        reference: self.reference.to_string(),
                        source: Box::new(e),
                    });
                }
            }
        }
        self.runtime
            .block_on(self.client.auth(&self.oci_ref, &self.auth, op))
            .map_err(|e| self.err(what, e))
    }

    /// The manifest of the reference, at most [`MAX_METADATA_SIZE`] bytes, read without
    /// holding more.
    ///
    /// `oci-client` 0.18's `pull_manifest_raw` reads the whole body whatever its size, and has
    /// no `HEAD` that returns one, so this one request is kbuild's own: reqwest (the client
    /// `oci-client` uses, configured the same way: TLS roots with `--ca-file`, timeouts, user
    /// agent), with the bearer token of `oci-client`'s handshake, or the basic credentials
    /// that handshake would send. A `Content-Length` over the cap is refused before the body
    /// is read, and a body without one is cut off past the cap. Any answer but 200 is asked
    /// again through `oci-client`, whose errors (401, 404, the error envelope) are mapped as
    /// for every other request.
    fn fetch_manifest(&self, token: Option<&str>) -> Result<Vec<u8>, RegistryError> {
        let what = format!("`{}`", self.reference);
        let refused = |why: String| RegistryError::Refused {
            what: what.clone(),
            why,
        };
        let transport = |e: reqwest::Error| RegistryError::Remote {
            what: "pull".to_owned(),
            reference: self.reference.to_string(),
            source: Box::new(e),
        };
        // The client of the identity-token exchange: built as `oci-client`'s is.
        let http = oauth::Http::new(
            self.ca_pem.as_deref(),
            crate::fetch::stall_timeout(),
            self.plain_http,
        )
        .map_err(transport)?;
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            http.scheme(),
            self.oci_ref.resolve_registry(),
            self.oci_ref.repository(),
            self.oci_ref
                .digest()
                .or(self.oci_ref.tag())
                .unwrap_or("latest"),
        );
        let mut request = http
            .client()
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_MEDIA_TYPE);
        request = match (token, &self.resolved.credentials) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Credentials::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            (None, _) => request,
        };
        let body = self.runtime.block_on(async {
            let mut response = request.send().await.map_err(transport)?;
            if response.status() != reqwest::StatusCode::OK {
                return Ok(None);
            }
            if let Some(len) = response.content_length()
                && len > MAX_METADATA_SIZE
            {
                return Err(refused(format!(
                    "its manifest is {len} bytes (at most {MAX_METADATA_SIZE})"
                )));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if (body.len() + chunk.len()) as u64 > MAX_METADATA_SIZE {
                    return Err(refused(format!(
                        "its manifest is more than {MAX_METADATA_SIZE} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Some(body))
        })?;
        match body {
            Some(body) => Ok(body),
            // Not there, or not ours to read: `oci-client` asks again and says why. Should
            // that succeed after all, its body is checked against the cap as it is.
            None => {
                let (bytes, _) = self
                    .runtime
                    .block_on(self.client.pull_manifest_raw(
                        &self.oci_ref,
                        &self.auth,
                        &[MANIFEST_MEDIA_TYPE],
                    ))
                    .map_err(|e| self.err("pull", e))?;
                if bytes.len() as u64 > MAX_METADATA_SIZE {
                    return Err(refused(format!("its manifest is {} bytes", bytes.len())));
                }
                Ok(bytes.to_vec())
            }
        }
    }
}

/// Maps a client error to ours: a 401/403 names the credentials consulted, a missing
/// manifest says so, the rest keep their cause.
fn remote(
    what: &str,
    reference: &Reference,
    resolved: &Resolved,
    e: OciDistributionError,
) -> RegistryError {
    use oci_client::errors::OciErrorCode as Code;
    let codes: Vec<&Code> = match &e {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().map(|x| &x.code).collect()
        }
        _ => Vec::new(),
    };
    let status = match &e {
        OciDistributionError::RequestError(r) => r.status().map(|s| s.as_u16()),
        _ => None,
    };
    let unauthorized = status == Some(401)
        || status == Some(403)
        || match &e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => true,
            OciDistributionError::ServerError { code, .. } => *code == 401 || *code == 403,
            _ => codes
                .iter()
                .any(|c| matches!(c, Code::Unauthorized | Code::Denied)),
        };
    let not_found = status == Some(404)
        || match &e {
            OciDistributionError::ImageManifestNotFoundError(_) => true,
            OciDistributionError::ServerError { code, .. } => *code == 404,
            _ => codes
                .iter()
                .any(|c| matches!(c, Code::ManifestUnknown | Code::NameUnknown)),
        };
    if unauthorized {
        RegistryError::Unauthorized {
            what: what.to_owned(),
            reference: reference.to_string(),
            anonymous: resolved.credentials == Credentials::Anonymous,
            credentials: resolved.describe(&reference.registry),
            source: Box::new(e),
        }
    } else if not_found {
        RegistryError::NotFound {
            what: what.to_owned(),
            reference: reference.to_string(),
        }
    } else {
        RegistryError::Remote {
            what: what.to_owned(),
            reference: reference.to_string(),
            source: Box::new(e),
        }
    }
}

/// Pushes generation `g` to `reference` (which has a tag or digest by now). Sends only the
/// blobs the registry lacks.
pub fn push(
    store: &Store,
    g: &Generation,
    reference: &Reference,
    opts: &RemoteOptions,
    observer: &dyn Observer,
) -> Result<PushReport, RegistryError> {
    let mut session = Session::open(reference, opts, observer)?;
    session.authenticate(RegistryOperation::Push, "push")?;
    // Shared, as a build: gc cannot remove the objects while they are read.
    let _lock = store.lock(LockMode::Shared, observer)?;
    store.remove_abandoned(observer);
    let scratch = store.scratch()?;
    let dir = scratch.path();
    layout::init(dir)?;
    let mounts = cache::mount_sources(store, &reference.registry, &reference.repository);
    // Entries the generation's own objects contradict are not used (see `cache`).
    let objects = store
        .meta(&g.rootfs)?
        .map(|m| m.references)
        .unwrap_or_default();
    let contradicted = cache::contradicted(store, &objects);
    // Objects are prepared on worker threads while this thread uploads each blob as soon as
    // it is ready, up to [`UPLOADS`] at once, so compression and transfer overlap and the
    // round trips of one blob (HEAD, POST, PUT) hide behind the others' bytes. Blob digests
    // come from the cache when they can: an object is then compressed only if the registry
    // lacks its blob, on tokio's blocking pool so that the other uploads keep going.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Ready>();
    let (art, mut transfer) = std::thread::scope(|scope| {
        let contradicted = &contradicted;
        let worker = scope.spawn(move || {
            artifact::describe(store, g, |name, path| {
                let remembered = match contradicted.get(name) {
                    Some(why) => cache::Remembered::Damaged(why.clone()),
                    None => cache::blob(store, name),
                };
                let p = match remembered {
                    cache::Remembered::Blob(blob, blob_size) => {
                        let (size, blake3) = artifact::hash_file(path)?;
                        artifact::Prepared {
                            size,
                            blake3,
                            blob,
                            blob_size,
                        }
                    }
                    other => {
                        if let cache::Remembered::Damaged(why) = other {
                            cache::forget_blob(store, name)?;
                            observer.warning(&format!(
                                "dropped the push cache entry `{}`: {why}; compressing object `{name}` again",
                                cache::entry_path(store, name).display()
                            ));
                        }
                        let p = stage_blob(dir, name, path)?;
                        cache::remember_blob(store, name, &p.blob, p.blob_size)?;
                        p
                    }
                };
                let ready = Ready {
                    digest: p.blob.clone(),
                    size: p.blob_size,
                    source: Some((name.clone(), path.to_owned())),
                };
                // Nobody listens once the uploader stopped on an error: stop too.
                tx.send(ready)
                    .map_err(|_| std::io::Error::other("the upload stopped"))?;
                Ok(p)
            })
        });
        // Owned by the upload stream, so that an upload error drops it and the workers stop.
        let mut sent = std::collections::BTreeSet::new();
        let blobs = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|ready| (ready, rx))
        })
        .filter(move |ready| std::future::ready(sent.insert(ready.digest.clone())));
        let session = &session;
        let mounts = &mounts;
        let uploaded = session.runtime.block_on(
            blobs
                .map(|ready| upload(session, dir, mounts, ready, (store, observer)))
                .buffer_unordered(UPLOADS)
                .try_fold(
                    (Transfer::default(), Vec::new()),
                    |(mut t, mut restaged), (sent, r)| async move {
                        sent.add_to(&mut t);
                        restaged.extend(r);
                        Ok((t, restaged))
                    },
                ),
        );
        let art = worker
            .join()
            .expect("describing a generation does not panic");
        // The upload's error first: the worker's is then only "the upload stopped".
        let (transfer, restaged) = uploaded?;
        Ok::<_, RegistryError>((restage(art?, &restaged), transfer))
    })?;
    layout::put_blob(dir, &art.manifest.config.digest, &art.config_bytes)?;
    let config = Ready {
        digest: art.manifest.config.digest.clone(),
        size: art.manifest.config.size,
        source: None,
    };
    session
        .runtime
        .block_on(upload(&session, dir, &mounts, config, (store, observer)))?
        .0
        .add_to(&mut transfer);
    let content_type = MANIFEST_MEDIA_TYPE.parse().expect("a valid header value");
    session
        .runtime
        .block_on(session.client.push_manifest_raw(
            &session.oci_ref,
            art.manifest_bytes.clone(),
            content_type,
        ))
        .map_err(|e| session.err("push", e))?;
    drop(scratch);
    cache::remember_push(store, &reference.registry, &reference.repository)?;
    Ok(PushReport {
        reference: reference.clone(),
        digest: art.manifest_digest,
        transfer,
    })
}

/// A blob ready to be sent: its digest and size, and the object it is compressed from
/// (`None`: staged already, the config).
struct Ready {
    digest: String,
    size: u64,
    source: Option<(StorePath, PathBuf)>,
}

/// How many blobs a push sends at once: enough to keep a local registry busy while one blob
/// is between round trips, few enough that the blobs held in memory stay bounded (at most
/// this many, whatever the generation's size).
const UPLOADS: usize = 4;

/// How many blobs a pull downloads at once (each streamed to its own file).
const DOWNLOADS: usize = 4;

/// What became of one blob of a push.
enum Sent {
    Present(u64),
    Mounted,
    Uploaded(u64),
}

impl Sent {
    fn add_to(self, t: &mut Transfer) {
        match self {
            Sent::Present(size) => {
                t.present_blobs += 1;
                t.present_bytes += size;
            }
            Sent::Mounted => t.mounted_blobs += 1,
            Sent::Uploaded(size) => {
                t.sent_blobs += 1;
                t.sent_bytes += size;
            }
        }
    }
}

/// An object whose remembered blob digest was wrong: it compresses to `blob`, not `stale`.
struct Restaged {
    stale: String,
    size: u64,
    blake3: String,
    blob: String,
    blob_size: u64,
}

/// The artifact with the blobs of `restaged` objects corrected (and the manifest around
/// them made again). Matched by the stale digest and the object's content, so an object
/// with the same bytes under another name, sharing the blob, is corrected too.
fn restage(art: artifact::Artifact, restaged: &[Restaged]) -> artifact::Artifact {
    if restaged.is_empty() {
        return art;
    }
    let mut config = art.config;
    for o in &mut config.objects {
        if let Some(r) = restaged
            .iter()
            .find(|r| r.stale == o.blob && r.size == o.size && r.blake3 == o.blake3)
        {
            o.blob = r.blob.clone();
            o.blob_size = r.blob_size;
        }
    }
    artifact::finish(config)
}

/// `HEAD` of blob `digest`, then a cross-repository mount: `None` when the blob must be sent.
async fn present_or_mounted(
    session: &Session,
    mounts: &[String],
    digest: &str,
    size: u64,
) -> Result<Option<Sent>, RegistryError> {
    let exists = session
        .client
        .blob_exists(&session.oci_ref, digest)
        .await
        .map_err(|e| session.err("push", e))?;
    if exists {
        return Ok(Some(Sent::Present(size)));
    }
    if mount(session, mounts, digest).await {
        return Ok(Some(Sent::Mounted));
    }
    Ok(None)
}

/// Sends one blob unless the registry has it: `HEAD`, else a cross-repository mount from
/// one of `mounts`, else an upload (compressing the object first, on the blocking pool,
/// when only its digest was remembered). A remembered digest the object does not compress
/// to is a stale cache entry: dropped with a warning, and the blob it really compresses to
/// is sent instead (and named in the manifest, see [`restage`]).
async fn upload(
    session: &Session,
    dir: &Path,
    mounts: &[String],
    blob: Ready,
    (store, observer): (&Store, &dyn Observer),
) -> Result<(Sent, Option<Restaged>), RegistryError> {
    if let Some(sent) = present_or_mounted(session, mounts, &blob.digest, blob.size).await? {
        return Ok((sent, None));
    }
    let mut digest = blob.digest.clone();
    let mut size = blob.size;
    let mut path = layout::blob_path(dir, &digest).expect("sha256");
    let mut restaged = None;
    if !path.exists()
        && let Some((name, object)) = blob.source
    {
        let (d, n) = (dir.to_owned(), name.clone());
        let p = tokio::task::spawn_blocking(move || stage_blob(&d, &n, &object))
            .await
            .map_err(std::io::Error::other)??;
        if p.blob != digest {
            cache::remember_blob(store, &name, &p.blob, p.blob_size)?;
            observer.warning(&format!(
                "dropped the push cache entry `{}`: it names blob `{digest}`, but object `{name}` compresses to `{}`; sending that one",
                cache::entry_path(store, &name).display(),
                p.blob
            ));
            restaged = Some(Restaged {
                stale: digest,
                size: p.size,
                blake3: p.blake3.to_hex(),
                blob: p.blob.clone(),
                blob_size: p.blob_size,
            });
            digest = p.blob;
            size = p.blob_size;
            path = layout::blob_path(dir, &digest).expect("sha256");
            if let Some(sent) = present_or_mounted(session, mounts, &digest, size).await? {
                return Ok((sent, restaged));
            }
        }
    }
    // Streamed from the staged file: memory does not grow with the blob.
    let annotate = |e: std::io::Error| crate::fs::annotate(e, "read", &path);
    let file = tokio::fs::File::open(&path).await.map_err(annotate)?;
    let len = file.metadata().await.map_err(annotate)?.len();
    session
        .client
        .push_blob_stream(&session.oci_ref, file_stream(file), &digest, Some(len))
        .await
        .map_err(|e| session.err("push", e))?;
    // Uploaded: the staged copy is not needed any more (a restaged blob's may be another
    // upload's too, and stays until the scratch directory goes).
    if restaged.is_none() {
        let _ = fs_err::remove_file(&path);
    }
    Ok((Sent::Uploaded(size), restaged))
}

/// The bytes of `file` in chunks of [`UPLOAD_CHUNK`], for a streamed upload; a read error
/// ends the stream (the upload fails with it).
fn file_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static {
    futures_util::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut file = file?;
        let mut buf = bytes::BytesMut::with_capacity(UPLOAD_CHUNK);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            Err(e) => Some((Err(OciDistributionError::IoError(e)), None)),
        }
    })
}

/// Bytes read from a staged blob per chunk of its upload.
const UPLOAD_CHUNK: usize = 256 << 10;

/// Compresses the object at `object` into the staging layout `dir` as its blob.
fn stage_blob(
    dir: &Path,
    name: &StorePath,
    object: &Path,
) -> Result<artifact::Prepared, RegistryError> {
    let tmp = dir.join(format!(".tmp-{name}"));
    // Not synced: the blob is uploaded from the page cache and deleted; a crash loses only
    // scratch, and the registry checks what it receives against the digest.
    let p = artifact::compress_file(object, &tmp, artifact::Durable::Scratch)?;
    crate::fs::rename_synced(&tmp, &layout::blob_path(dir, &p.blob).expect("sha256"))?;
    Ok(p)
}

/// Asks the registry to mount blob `digest` from one of `sources` (other repositories of
/// the same registry this store pushed to). Any failure means "upload it".
async fn mount(session: &Session, sources: &[String], digest: &str) -> bool {
    for repo in sources {
        let from = oci_client::Reference::with_tag(
            session.reference.registry.clone(),
            repo.clone(),
            "latest".to_owned(),
        );
        if session
            .client
            .mount_blob(&session.oci_ref, &from, digest)
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

/// Pulls `reference` into the store at `store_dir` (made if missing, once the manifest is
/// fetched and checked) and records its generation in `profile` (else the one it was pushed
/// from). Downloads only the blobs of objects the store lacks, each decoded and checked as
/// its bytes arrive.
pub fn pull(
    store_dir: &Path,
    reference: &Reference,
    profile: Option<&str>,
    opts: &RemoteOptions,
    observer: &dyn Observer,
) -> Result<PullReport, RegistryError> {
    let what = format!("`{reference}`");
    let mut session = Session::open(reference, opts, observer)?;
    let token = session.authenticate(RegistryOperation::Pull, "pull")?;
    let manifest_bytes = session.fetch_manifest(token.as_deref())?;
    // The digest is ours, not the registry's word: what was asked for by digest must be it.
    let digest = artifact::sha256_digest(&manifest_bytes);
    if let Some(wanted) = &reference.digest
        && *wanted != digest
    {
        return Err(RegistryError::DigestMismatch {
            what: format!("the manifest of {what}"),
            digest: wanted.clone(),
            actual: digest,
            from_registry: true,
        });
    }
    let manifest = import::check_manifest(&manifest_bytes, &what)?;
    let config_bytes = session
        .runtime
        .block_on(fetch_config(&session, &manifest.config))?;
    let checked = import::check_config(manifest, &config_bytes, &what)?;
    let config = &checked.config;
    // The store is opened (made, on a new host) only once there is a generation to put in
    // it: a wrong reference or a registry that is down leaves no empty store behind.
    let store = &Store::open(store_dir)?;
    if let Some(report) = already_pulled(store, &checked, &digest, profile, observer)? {
        return Ok(report);
    }
    store.require_writable_layout()?;
    let hex = artifact::digest_hex(&digest).expect("sha256").to_owned();
    let stage = store.dir().join(format!(".tmp-pull-{}", &hex[..32]));
    // Staging and import under the shared lock: gc (exclusive) deletes `.tmp-*` entries.
    let _lock = store.lock(LockMode::Shared, observer)?;
    // The staging directory is per manifest, so two pulls of one reference would write the
    // same files: the second waits for the first (then finds its objects present).
    let _stage_lock = cache::pull_lock(store, &hex[..32], observer)?;
    store.remove_abandoned(observer);
    let objects_dir = stage.join("objects");
    // A staging entry that is not a directory (a symlink, planted or left by damage) is no
    // earlier pull's: unlinked, never followed, so nothing is written outside the store.
    for d in [&stage, &objects_dir] {
        if fs_err::symlink_metadata(d).is_ok_and(|m| !m.is_dir()) {
            crate::fs::remove_tree(d)?;
        }
    }
    fs_err::create_dir_all(&objects_dir)?;
    let missing = import::missing_objects(store, config);
    let mut transfer = Transfer::default();
    for o in &config.objects {
        if store.contains(&o.name) {
            transfer.present_blobs += 1;
            transfer.present_bytes += o.blob_size;
        }
    }
    // Objects an interrupted pull of this manifest checked and staged are checked again
    // (a staged file is not read-only yet) and kept; the others' blobs are downloaded.
    let mut resumed = 0;
    let mut wanted = Vec::new();
    for group in import::by_blob(&missing) {
        if group
            .iter()
            .all(|o| staged_whole(&objects_dir.join(o.name.as_str()), o))
        {
            resumed += 1;
        } else {
            wanted.push(group);
        }
    }
    // Several blobs at once, each decoded on its own blocking thread as its bytes arrive:
    // one blob's round trip hides behind the others' bytes, and decoding behind the network.
    let downloads = {
        let (session, objects_dir, what) = (&session, &objects_dir, &what);
        session.runtime.block_on(
            futures_util::stream::iter(wanted)
                .map(|group| async move {
                    let size = group[0].blob_size;
                    fetch_objects(session, objects_dir, group, what).await?;
                    Ok::<_, RegistryError>(size)
                })
                .buffer_unordered(DOWNLOADS)
                .try_fold(Transfer::default(), |mut t, size| async move {
                    t.sent_blobs += 1;
                    t.sent_bytes += size;
                    Ok(t)
                }),
        )?
    };
    transfer.sent_blobs = downloads.sent_blobs;
    transfer.sent_bytes = downloads.sent_bytes;
    let staged: Vec<_> = missing
        .iter()
        .map(|o| (*o, objects_dir.join(o.name.as_str())))
        .collect();
    let present = config.objects.len() - missing.len();
    let imported = import::add_staged(store, &staged, config, present, profile, observer)?;
    crate::fs::remove_tree(&stage)?;
    Ok(PullReport {
        digest,
        transfer,
        resumed,
        imported,
    })
}

/// The pull of a generation the store has whole and the profile's newest already: its
/// checked config (fetched into memory) says so, and nothing is staged or written, so a
/// read-only store answers it too. `None`: pull as usual.
fn already_pulled(
    store: &Store,
    checked: &import::Checked,
    digest: &str,
    profile: Option<&str>,
    observer: &dyn Observer,
) -> Result<Option<PullReport>, RegistryError> {
    let _lock = store.lock(LockMode::Shared, observer)?;
    let Some(imported) = import::already_recorded(store, checked, profile)? else {
        return Ok(None);
    };
    let transfer = Transfer {
        present_blobs: checked.config.objects.len(),
        present_bytes: checked.config.objects.iter().map(|o| o.blob_size).sum(),
        ..Transfer::default()
    };
    Ok(Some(PullReport {
        digest: digest.to_owned(),
        transfer,
        resumed: 0,
        imported,
    }))
}

/// Whether `path` holds the object `o` whole (staged by an earlier, interrupted pull): its
/// size, mode and BLAKE3 hashing to its name again.
fn staged_whole(path: &Path, o: &artifact::Object) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(md) = fs_err::symlink_metadata(path) else {
        return false;
    };
    if !md.is_file() || md.len() != o.size || (md.permissions().mode() & 0o111 != 0) != o.executable
    {
        return false;
    }
    match artifact::hash_file(path) {
        Ok((size, contents)) => {
            let node = crate::store::Node::File {
                executable: o.executable,
                size,
                contents,
            };
            o.node().as_ref() == Some(&node)
        }
        Err(_) => false,
    }
}

/// The blob `d` as a stream of its bytes, unverified: whoever reads it checks its digest.
///
/// Asked as the range from byte 0 so that `oci-client` hands the bytes over as they come
/// (`BlobResponse::Partial`) instead of hashing them itself on the runtime's one thread,
/// which serves every download: the blocking thread that decodes a blob hashes it on the way
/// ([`import::decode_objects`]). A registry that ignores ranges answers with the whole blob
/// (`Full`), which `oci-client` verifies as well.
async fn blob_stream(
    session: &Session,
    digest: &str,
    size: u64,
) -> Result<oci_client::client::SizedStream, RegistryError> {
    let d = descriptor(digest, size, artifact::OBJECT_MEDIA_TYPE);
    let response = session
        .client
        .pull_blob_stream_partial(&session.oci_ref, &d, 0, None)
        .await
        .map_err(|e| session.err("pull", e))?;
    let stream = match response {
        oci_client::client::BlobResponse::Full(s)
        | oci_client::client::BlobResponse::Partial(s) => s,
    };
    if let Some(len) = stream.content_length
        && len != size
    {
        return Err(RegistryError::SizeMismatch {
            what: format!("`{}`", session.reference),
            digest: digest.to_owned(),
            actual: format!("{len} bytes (the registry's Content-Length)"),
            declared: size,
        });
    }
    Ok(stream)
}

/// The config blob of the manifest, read whole (it is at most [`MAX_METADATA_SIZE`], checked
/// with the manifest) and checked against its digest.
async fn fetch_config(
    session: &Session,
    d: &artifact::Descriptor,
) -> Result<Vec<u8>, RegistryError> {
    let mut stream = blob_stream(session, &d.digest, d.size).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport(session, e))?;
        if (bytes.len() + chunk.len()) as u64 > d.size {
            return Err(too_long(session, &d.digest, d.size));
        }
        bytes.extend_from_slice(&chunk);
    }
    let actual = artifact::sha256_digest(&bytes);
    if actual != d.digest {
        return Err(RegistryError::DigestMismatch {
            what: format!("the config of `{}`", session.reference),
            digest: d.digest.clone(),
            actual,
            from_registry: true,
        });
    }
    Ok(bytes)
}

/// How many received chunks (each what one read of the socket gave: a few KiB, up to a few
/// hundred KiB once hyper's read buffer has grown) may wait for a blob's decoder: enough to
/// ride out a slow write, a few MiB per download. (64 measured 95 MiB of peak RSS for a
/// 350 MiB pull, the queues full behind decoders slower than the loopback.)
const DECODE_QUEUE: usize = 8;

/// Downloads the blob of `objects` (all of one blob) and decodes it as it arrives, on a
/// blocking thread fed through a bounded channel (so the runtime's other downloads go on),
/// into `objects_dir/<name>` for each object: checked against the blob's digest and size and
/// the objects' names on the way ([`import::decode_objects`]), written as `.part-<name>` and
/// renamed once checked, so a file named after an object is whole.
async fn fetch_objects(
    session: &Session,
    objects_dir: &Path,
    objects: Vec<&artifact::Object>,
    what: &str,
) -> Result<(), RegistryError> {
    let (digest, size) = (objects[0].blob.clone(), objects[0].blob_size);
    let mut stream = blob_stream(session, &digest, size).await?;
    let owned: Vec<artifact::Object> = objects.into_iter().cloned().collect();
    let parts: Vec<PathBuf> = owned
        .iter()
        .map(|o| objects_dir.join(format!(".part-{}", o.name)))
        .collect();
    let finals: Vec<PathBuf> = owned
        .iter()
        .map(|o| objects_dir.join(o.name.as_str()))
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(DECODE_QUEUE);
    let what = what.to_owned();
    let decoder = tokio::task::spawn_blocking(move || {
        let refs: Vec<&artifact::Object> = owned.iter().collect();
        import::decode_objects(ChannelReader::new(rx), &refs, &parts, &what)
            .map_err(RegistryError::in_registry)?;
        for (part, dest) in parts.iter().zip(&finals) {
            fs_err::rename(part, dest)?;
        }
        Ok::<_, RegistryError>(())
    });
    // The registry's bytes go to the decoder, never more than the declared size; a transport
    // error ends the stream (the decoder then sees the bytes end early and refuses them).
    let mut left = size;
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if chunk.len() as u64 > left {
                    failed = Some(too_long(session, &digest, size));
                    break;
                }
                left -= chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    // The decoder stopped: its error says why.
                    break;
                }
            }
            // `oci-client`'s own check of a whole blob (a registry that ignored the range):
            // every byte reached the decoder, whose check names the object.
            Err(e)
                if e.get_ref()
                    .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>()) =>
            {
                break;
            }
            Err(e) => {
                failed = Some(transport(session, e));
                break;
            }
        }
    }
    drop(tx);
    let decoded = decoder.await.map_err(std::io::Error::other)?;
    match (decoded, failed) {
        // Every byte arrived and checked, whatever came after.
        (Ok(()), _) => Ok(()),
        // The cause, not the decoder's view of bytes that stopped short.
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e),
    }
}

fn transport(session: &Session, e: std::io::Error) -> RegistryError {
    RegistryError::Remote {
        what: "pull".to_owned(),
        reference: session.reference.to_string(),
        source: Box::new(e),
    }
}

fn too_long(session: &Session, digest: &str, size: u64) -> RegistryError {
    RegistryError::SizeMismatch {
        what: format!("`{}`", session.reference),
        digest: digest.to_owned(),
        actual: format!("more than {size} bytes"),
        declared: size,
    }
}

/// The reading end of a blob's channel, for the blocking thread that decodes it: chunks as
/// the runtime received them; the end of the channel is the end of the bytes.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        ChannelReader {
            rx,
            chunk: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

fn descriptor(digest: &str, size: u64, media_type: &str) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_owned(),
        digest: digest.to_owned(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    }
}
