//! systemd unit names (systemd.unit(5)) and the paths systemd reads below
//! `/etc/systemd/system`, checked at build time so that a recipe never installs a unit
//! systemd cannot load; and shell quoting for the commands kbuild prints.

/// The unit types systemd knows (the suffix after the last `.`).
pub const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// systemd's limit: a unit name is shorter than 256 bytes.
pub const UNIT_NAME_MAX: usize = 255;

/// What a valid unit name names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// `foo.service`
    Plain,
    /// `foo@.service`: never started itself; its instances are.
    Template,
    /// `foo@bar.service`
    Instance,
}

/// Checks `name` as systemd's `unit_name_is_valid` does: at most 255 bytes, a known type
/// suffix, a non-empty prefix of letters, digits and `:-_.\`, at most one `@` before the
/// instance (which may hold further `@`). The error says what is wrong.
pub fn check(name: &str) -> Result<NameKind, String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > UNIT_NAME_MAX {
        return Err(format!(
            "it is {} bytes long; systemd allows at most {UNIT_NAME_MAX}",
            name.len()
        ));
    }
    let Some((stem, suffix)) = name.rsplit_once('.').filter(|(s, _)| !s.is_empty()) else {
        return Err(format!(
            "it has no unit type suffix (one of .{})",
            UNIT_TYPES.join(", .")
        ));
    };
    if !UNIT_TYPES.contains(&suffix) {
        return Err(format!(
            "`.{suffix}` is not a unit type (one of .{})",
            UNIT_TYPES.join(", .")
        ));
    }
    if let Some(c) = stem
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c)))
    {
        return Err(format!(
            "{} is not allowed in a unit name (only letters, digits and `:-_.\\@`; `systemd-escape` makes a name from any text)",
            describe_char(c)
        ));
    }
    match stem.split_once('@') {
        None => Ok(NameKind::Plain),
        Some(("", _)) => {
            Err("it starts with `@` (the part before `@` is the unit's prefix)".into())
        }
        Some((_, "")) => Ok(NameKind::Template),
        Some(_) => Ok(NameKind::Instance),
    }
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        c if c.is_control() => format!("the control character {c:?}"),
        c => format!("`{c}`"),
    }
}

/// The template of an instance: `foo@bar.service` → `foo@.service`.
/// What `%` followed by `c` means in a setting of unit `name` (systemd.unit(5), "Specifiers"),
/// for the specifiers that depend only on the unit's name: `%n` (full name), `%N` (name
/// without the type suffix), `%p` (prefix before `@`), `%i` (instance), `%j` (the prefix's
/// last `-` component) and `%%`. `None` for any other specifier.
pub fn name_specifier(c: char, name: &str) -> Option<String> {
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
    Some(match c {
        'n' => name.to_owned(),
        'N' => stem.to_owned(),
        'p' => prefix.to_owned(),
        'i' => instance.to_owned(),
        'j' => prefix.rsplit('-').next().unwrap_or(prefix).to_owned(),
        '%' => "%".to_owned(),
        _ => return None,
    })
}

/// Expands `%` specifiers in `value` with `expand`, which gets the character after each `%`
/// (`None` for a lone `%` at the end) and says what it stands for, or fails.
pub fn expand_specifiers<E>(
    value: &str,
    mut expand: impl FnMut(Option<char>) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            out.push_str(&expand(chars.next())?);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

pub fn template_of(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    let (prefix, instance) = stem.split_once('@')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

/// Directories below `/etc/systemd/system` whose entries name the units a unit pulls in.
pub const DEPENDENCY_DIRS: &[&str] = &[".wants", ".requires", ".upholds"];

/// Checks a recipe target below `/etc/systemd/system/` (`rel` is the part after it): a
/// unit file, a drop-in `NAME.d/*.conf` (NAME a unit, a type as in `service.d`, or a
/// prefix as in `foo-.service.d`), or a link in `NAME.wants/` (and `.requires/`,
/// `.upholds/`). Anything else systemd does not read, or cannot load.
pub fn check_unit_path(rel: &str) -> Result<(), String> {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        [name] => check(name)
            .map(drop)
            .map_err(|why| format!("`{name}` is not a unit name systemd can load: {why}")),
        [dir, file] => {
            if let Some(unit) = dir.strip_suffix(".d") {
                if !UNIT_TYPES.contains(&unit) {
                    check(unit).map_err(|why| {
                        format!("drop-in directory `{dir}` does not name a unit: {why}")
                    })?;
                }
                if !file.ends_with(".conf") {
                    return Err(format!(
                        "drop-in `{dir}/{file}` does not end in `.conf`; systemd reads only `*.conf` there"
                    ));
                }
                Ok(())
            } else if let Some(kind) = DEPENDENCY_DIRS.iter().find(|k| dir.ends_with(**k)) {
                let unit = &dir[..dir.len() - kind.len()];
                check(unit).map_err(|why| format!("`{dir}` does not belong to a unit: {why}"))?;
                Err(format!(
                    "`{dir}/{file}` would be a regular file, but systemd follows only symlinks in `{kind}/` directories (a file there is ignored)"
                ))
            } else {
                Err(other_path(rel))
            }
        }
        _ => Err(other_path(rel)),
    }
}

fn other_path(rel: &str) -> String {
    format!(
        "systemd does not read `{rel}`: below /etc/systemd/system it reads unit files, `NAME.d/*.conf` drop-ins and links in `NAME.wants/`"
    )
}

/// `s` as one shell word: unchanged when it holds only characters no shell treats
/// specially, else in single quotes (a `'` inside written `'\''`).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A command line (program and arguments) as a shell would need it typed.
pub fn shell_line<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check("etcd.service"), Ok(NameKind::Plain));
        assert_eq!(check("etcd-member@.service"), Ok(NameKind::Template));
        assert_eq!(check("etcd-member@a@b.service"), Ok(NameKind::Instance));
        assert!(check("kube proxy.service").is_err());
        assert!(check("x.servce").is_err());
        assert!(check("@x.service").is_err());
        assert!(check(".service").is_err());
        assert!(check(&format!("{}.service", "a".repeat(247))).is_ok());
        assert!(check(&format!("{}.service", "a".repeat(248))).is_err());
        assert_eq!(template_of("a@b.socket").as_deref(), Some("a@.socket"));
        assert_eq!(template_of("a@.socket"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("kube-apiserver.service"),
            "kube-apiserver.service"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a@*.service"), "'a@*.service'");
    }
}
