//! Validated names and values at the edge of the recipe model: targets, inputs, variable types.

use std::fmt;
use std::net::IpAddr;

/// Where in a root kbuild may manage files. Everything else is refused at parse time.
pub const ALLOWED_PREFIXES: &[&str] = &["/etc/", "/usr/local/bin/"];

/// An absolute, normalized path inside an allowed prefix, e.g. `/etc/kubernetes/config`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetPath(String);

impl TargetPath {
    pub fn parse(s: &str) -> Result<TargetPath, String> {
        if !s.starts_with('/') {
            return Err(format!("target `{s}` is not an absolute path"));
        }
        check_components(s, "target")?;
        if !ALLOWED_PREFIXES.iter().any(|p| s.starts_with(p)) {
            return Err(format!(
                "target `{s}` is outside the paths kbuild manages ({})",
                ALLOWED_PREFIXES.join(", ")
            ));
        }
        if s.starts_with("/etc/.kbuild") {
            return Err(format!(
                "target `{s}` is inside kbuild's own state directory"
            ));
        }
        Ok(TargetPath(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path relative to a root (no leading slash), as laid out in a rootfs.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }
}

impl fmt::Display for TargetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TargetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetPath({})", self.0)
    }
}

/// Checks an absolute path for empty, `.` and `..` components and odd bytes.
pub fn check_components(s: &str, what: &str) -> Result<(), String> {
    if s.len() > 4096 {
        return Err(format!("{what} path is longer than 4096 bytes"));
    }
    for c in s[1..].split('/') {
        match c {
            "" => {
                return Err(format!(
                    "{what} `{s}` has an empty component (`//` or a trailing `/`)"
                ));
            }
            "." | ".." => return Err(format!("{what} `{s}` contains a `{c}` component")),
            _ if c.len() > 255 => {
                return Err(format!(
                    "{what} `{s}` has a component longer than 255 bytes"
                ));
            }
            _ if c.bytes().any(|b| b.is_ascii_control()) => {
                return Err(format!("{what} `{s:?}` contains a control character"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A plain name: recipes, inputs and variables share this alphabet.
pub fn check_name(s: &str, what: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 100
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{s}` must start with a letter or digit and contain only letters, digits, `-`, `_` and `.`"
        ))
    }
}

/// The type of a recipe variable; values are checked against it before any rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarType {
    String,
    Ip,
    Cidr,
    Port,
}

impl VarType {
    pub fn parse(s: &str) -> Option<VarType> {
        Some(match s {
            "string" => VarType::String,
            "ip" => VarType::Ip,
            "cidr" => VarType::Cidr,
            "port" => VarType::Port,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Ip => "ip",
            VarType::Cidr => "cidr",
            VarType::Port => "port",
        }
    }

    /// Checks `value`; the error says what is wrong in words a user can act on.
    pub fn check(self, value: &str) -> Result<(), String> {
        match self {
            VarType::String => {
                if value.contains('\n') || value.contains('\0') {
                    Err("a string variable may not contain a newline or NUL".into())
                } else {
                    Ok(())
                }
            }
            VarType::Ip => value
                .parse::<IpAddr>()
                .map(drop)
                .map_err(|_| format!("`{value}` is not an IP address (e.g. 10.72.84.160)")),
            VarType::Cidr => check_cidr(value),
            // Digits only, no sign and no leading zero: Go's flag parsing would read `0443`
            // as octal, so only the canonical spelling is accepted.
            VarType::Port => match value.parse::<u16>() {
                Ok(p)
                    if p > 0
                        && value.bytes().all(|b| b.is_ascii_digit())
                        && !value.starts_with('0') =>
                {
                    Ok(())
                }
                _ => Err(format!("`{value}` is not a port number (1-65535)")),
            },
        }
    }
}

fn check_cidr(value: &str) -> Result<(), String> {
    let bad = || format!("`{value}` is not a CIDR block (e.g. 10.254.0.0/16)");
    let (addr, len) = value.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let len: u32 = len.parse().map_err(|_| bad())?;
    let (bits, max) = match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    if len > max {
        return Err(format!(
            "`{value}`: prefix length {len} is longer than {max}"
        ));
    }
    // `checked_shr`: a /128 has no host bits (a plain `>> 128` would overflow).
    let host_bits = u128::MAX.checked_shr(len).unwrap_or(0);
    if bits & host_bits != 0 {
        let net = match addr {
            IpAddr::V4(_) => {
                IpAddr::V4(std::net::Ipv4Addr::from(((bits & !host_bits) >> 96) as u32))
            }
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(bits & !host_bits)),
        };
        return Err(format!(
            "`{value}` has host bits set; the network is `{net}/{len}`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert!(TargetPath::parse("/etc/kubernetes/config").is_ok());
        assert!(TargetPath::parse("/usr/local/bin/kubectl").is_ok());
        for bad in [
            "etc/x",
            "/etc/../x",
            "/etc/./x",
            "/etc//x",
            "/etc/x/",
            "/usr/bin/x",
            "/etc",
            "/etc/.kbuild/current",
        ] {
            assert!(TargetPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn variable_types() {
        assert!(VarType::Ip.check("10.72.84.160").is_ok());
        assert!(VarType::Ip.check("::1").is_ok());
        assert!(VarType::Ip.check("300.1.1.1").is_err());
        assert!(VarType::Cidr.check("10.254.0.0/16").is_ok());
        assert!(VarType::Cidr.check("fd00::/8").is_ok());
        assert_eq!(
            VarType::Cidr.check("10.254.0.1/16").unwrap_err(),
            "`10.254.0.1/16` has host bits set; the network is `10.254.0.0/16`"
        );
        assert!(VarType::Cidr.check("10.254.0.0/33").is_err());
        assert!(VarType::Cidr.check("10.254.0.0").is_err());
        assert!(VarType::Cidr.check("0.0.0.0/0").is_ok());
        assert!(VarType::Port.check("8080").is_ok());
        assert!(VarType::Port.check("0").is_err());
        assert!(VarType::Port.check("65536").is_err());
    }
}
