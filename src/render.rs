//! Template rendering (minijinja, strict): an undefined variable is an error naming the
//! template line, never an empty string. Only `{{ }}`, `{% %}` and `{# #}` are template
//! syntax, so systemd's own `$VAR` and `${VAR}` pass through untouched.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::recipe::FileFormat;

/// Names a template in errors: `templates/apiserver.j2:9`, or for a recipe's literal `text`,
/// the recipe location and the line within the text.
pub fn location(template: &str, line: usize) -> String {
    match template.split_once('\0') {
        Some((loc, target)) => format!("{loc}: `text` of `{target}`, line {line}"),
        None => format!("{template}:{line}"),
    }
}

/// The name `render` expects for a literal `text` declared at `loc` for `target`.
pub fn text_name(loc: &str, target: &str) -> String {
    format!("{loc}\0{target}")
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{}: undefined variable `{name}`", location(template, *line))]
    Undefined {
        template: String,
        line: usize,
        name: String,
        known: Vec<String>,
    },
    #[error("{}: {message}", location(template, *line))]
    Template {
        template: String,
        line: usize,
        message: String,
    },
    #[error("{}: rendered `{target}` is not a valid environment file: {message}", location(template, *line))]
    Env {
        template: String,
        target: String,
        line: usize,
        message: String,
    },
}

impl RenderError {
    pub fn help(&self) -> Option<String> {
        match self {
            RenderError::Undefined { name, known, .. } => Some(format!(
                "declare `[variables.{name}]` in a recipe, or use one of: {}",
                known.join(", ")
            )),
            RenderError::Env { .. } => Some(
                "each line must be `KEY=\"value\"` with the value on one line; is a value broken by a line break?"
                    .into(),
            ),
            RenderError::Template { .. } => None,
        }
    }
}

/// Renders `source` (named `name` in errors) with `vars`.
pub fn render(
    name: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, RenderError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // `{{ IP | host }}` is the address as the host part of a URL: IPv6 in brackets.
    env.add_filter("host", |v: String| -> String {
        if v.contains(':') && !v.starts_with('[') {
            format!("[{v}]")
        } else {
            v
        }
    });
    let syntax_error = |e: minijinja::Error| RenderError::Template {
        template: name.to_owned(),
        line: e.line().unwrap_or(0),
        message: describe(&e),
    };
    let tmpl = env.template_from_str(source).map_err(syntax_error)?;

    // Name the first undefined variable and its line before rendering: minijinja's own
    // error says "undefined value" without the name.
    let globals: Vec<String> = env.globals().map(|(k, _)| k.to_owned()).collect();
    let mut missing: Vec<String> = tmpl
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !vars.contains_key(v) && !globals.contains(v))
        .collect();
    missing.sort_by_key(|v| first_use(source, v));
    if let Some(v) = missing.into_iter().next() {
        return Err(RenderError::Undefined {
            template: name.to_owned(),
            line: first_use(source, &v),
            name: v,
            known: vars.keys().cloned().collect(),
        });
    }
    tmpl.render(vars).map_err(syntax_error)
}

/// Checks a rendered file against its declared format.
pub fn check_format(
    template: &str,
    target: &str,
    text: &str,
    format: FileFormat,
) -> Result<(), RenderError> {
    match format {
        FileFormat::Text => Ok(()),
        FileFormat::Env => check_env(text).map_err(|(line, message)| RenderError::Env {
            template: template.to_owned(),
            target: target.to_owned(),
            line,
            message,
        }),
    }
}

/// A systemd `EnvironmentFile=`: blank lines, `#`/`;` comments, or `KEY=VALUE` where a
/// double-quoted value closes on its own line. This is what catches the seed's paths broken
/// across two lines (`--tls-cert-file=/etc/ku` ⏎ `bernetes/ssl/…`).
fn check_env(text: &str) -> Result<(), (usize, String)> {
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            return Err((n, format!("line `{}` is not KEY=VALUE", shorten(t))));
        };
        let key_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err((n, format!("`{}` is not a variable name", shorten(key))));
        }
        if let Some(rest) = value.strip_prefix('"')
            && (!rest.ends_with('"') || rest[..rest.len().saturating_sub(1)].contains('"'))
        {
            return Err((
                n,
                format!("the quoted value of `{key}` does not close on its line"),
            ));
        }
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Line of the first template tag that mentions `var` (1 if none is found).
fn first_use(source: &str, var: &str) -> usize {
    source
        .lines()
        .position(|l| {
            (l.contains("{{") || l.contains("{%"))
                && l.match_indices(var).any(|(i, _)| {
                    let before = l[..i].chars().next_back();
                    let after = l[i + var.len()..].chars().next();
                    let ident =
                        |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                    !ident(before) && !ident(after)
                })
        })
        .map_or(1, |i| i + 1)
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn systemd_dollar_syntax_passes_through() {
        let out = render(
            "t",
            "ExecStart=/bin/x \\\n  $KUBE_A ${KUBE_B} --ip={{ IP }}\n",
            &vars(&[("IP", "10.0.0.1")]),
        )
        .unwrap();
        assert_eq!(
            out,
            "ExecStart=/bin/x \\\n  $KUBE_A ${KUBE_B} --ip=10.0.0.1\n"
        );
    }

    #[test]
    fn host_filter_brackets_ipv6_only() {
        let out = render(
            "t",
            "{{ A | host }} {{ B | host }}",
            &vars(&[("A", "10.0.0.1"), ("B", "fd00::10")]),
        )
        .unwrap();
        assert_eq!(out, "10.0.0.1 [fd00::10]");
    }

    #[test]
    fn undefined_variable_names_the_line() {
        let err = render("t.j2", "a\nb\nc={{ ETCD4 }}\n", &vars(&[("IP", "1")])).unwrap_err();
        assert_eq!(err.to_string(), "t.j2:3: undefined variable `ETCD4`");
    }

    #[test]
    fn env_check_catches_broken_value() {
        let text = "A=\"x\"\n# c\nB=\"--tls=/etc/ku\nbernetes/ssl/k.pem\"\n";
        let err = check_format("t", "/etc/x", text, FileFormat::Env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t:3: rendered `/etc/x` is not a valid environment file: the quoted value of `B` does not close on its line"
        );
    }
}
