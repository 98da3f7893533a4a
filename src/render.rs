//! Template rendering (minijinja, strict): an undefined variable is an error naming the
//! template line, never an empty string. Only `{{ }}`, `{% %}` and `{# #}` are template
//! syntax, so systemd's own `$VAR` and `${VAR}` pass through untouched.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::recipe::FileFormat;

/// Names a template in errors: `templates/apiserver.j2:9`, or for a recipe's literal `text`,
/// the recipe location and the line within the text.
pub fn location(template: &str, line: usize) -> String {
    match template.split_once('\0') {
        Some((loc, target)) => format!("{loc}: `text` of `{target}`, line {line}"),
        None => format!("{template}:{line}"),
    }
}

/// [`location`] with a column when known: `FILE:LINE:COLUMN`, or `…, line L, column C`.
pub fn location_at(template: &str, line: usize, column: Option<usize>) -> String {
    match (column, template.contains('\0')) {
        (None, _) => location(template, line),
        (Some(c), true) => format!("{}, column {c}", location(template, line)),
        (Some(c), false) => format!("{}:{c}", location(template, line)),
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
    #[error("{}: {message}", location_at(template, *line, *column))]
    Template {
        template: String,
        line: usize,
        /// The column (from 1) where the error starts, when minijinja knows it.
        column: Option<usize>,
        message: String,
        /// Set for an unknown filter.
        unknown_filter: bool,
    },
    #[error("{}: rendered `{target}` is not a valid environment file: {message}", location(template, *line))]
    Env {
        template: String,
        target: String,
        line: usize,
        message: String,
    },
    /// A `{{ }}` output that systemd would not read as it is (an escape, a quote, blanks
    /// at an end): the file would mean something else than the template wrote.
    #[error("{0}")]
    EnvValue(Box<EnvValue>),
}

/// A `{{ }}` output of an env file that systemd would not read as written.
#[derive(Debug)]
pub struct EnvValue {
    pub template: String,
    pub target: String,
    pub line: usize,
    /// The variable whose value it is, when one is (`{{ VAR }}`).
    pub var: Option<String>,
    pub value: String,
    pub reason: String,
    /// The assignment systemd would read there instead.
    pub read_as: Option<(String, String)>,
}

impl std::fmt::Display for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = self
            .var
            .as_deref()
            .map_or("a `{{ }}` output".to_owned(), |v| {
                format!("`{{{{ {v} }}}}`")
            });
        write!(
            f,
            "{}: {what} = `{}` is not read by systemd as written in `{}`: {}",
            location(&self.template, self.line),
            self.value,
            self.target,
            self.reason
        )?;
        if let Some((k, v)) = &self.read_as {
            write!(f, " (systemd would read `{k}` as {v:?})")?;
        }
        Ok(())
    }
}

impl RenderError {
    pub fn help(&self) -> Option<String> {
        match self {
            RenderError::Undefined { name, known, .. } => Some(format!(
                "declare `[variables.{name}]` in a recipe, or use one of: {}",
                known.join(", ")
            )),
            RenderError::Env { .. } => Some(
                "write each line as `KEY=\"value\"` (a value on one line) or a `#` comment, as systemd.exec(5) reads an EnvironmentFile=, then run `kbuild build` again"
                    .into(),
            ),
            RenderError::EnvValue(e) => {
                let v = e.var.as_deref().unwrap_or("VAR");
                Some(format!(
                    "let kbuild quote it: `KEY={{{{ {v} | env_quote }}}}` (double quotes, `\\` before `\"`, `\\`, `` ` `` and `$`), or pass a value systemd reads as it is: `kbuild build RECIPE --set {v}=VALUE`"
                ))
            }
            RenderError::Template {
                unknown_filter: true,
                ..
            } => Some(format!(
                "available filters: {}; fix the template, then run `kbuild build` again",
                FILTERS.join(", ")
            )),
            RenderError::Template { .. } => None,
        }
    }
}

/// The filters templates can use: kbuild's own, then minijinja's built-in ones (as enabled
/// by the crate features in Cargo.toml).
pub const FILTERS: &[&str] = &[
    "host",
    "env_quote",
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "trim",
    "unique",
    "upper",
    "zip",
];

/// Renders `source` (named `name` in errors) with `vars`.
pub fn render(
    name: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, RenderError> {
    render_traced(name, source, vars).map(|r| r.text)
}

/// A rendered text and where in it each `{{ }}` output went.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    /// The rendered file.
    pub text: String,
    /// Byte ranges of `text` written by `{{ }}` expressions (not by filters that mark their
    /// output safe, such as `env_quote`, which quote on purpose).
    pub outputs: Vec<std::ops::Range<usize>>,
}

/// Marks around each `{{ }}` output while rendering (Unicode noncharacters: never in a
/// template or value kbuild traces; if one is, nothing is traced and no output is checked).
const OPEN: char = '\u{FDD0}';
const CLOSE: char = '\u{FDD1}';

/// Renders like [`render`], recording where each `{{ }}` output went.
pub fn render_traced(
    name: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Rendered, RenderError> {
    render_hosts(name, source, vars, &[])
}

/// Renders like [`render_traced`], with the hosts of the hosts file as `hosts` (an empty
/// list for a build without one, so `{% if hosts %}` chooses the single-host form).
pub fn render_hosts(
    name: &str,
    source: &str,
    vars: &BTreeMap<String, String>,
    hosts: &[crate::hosts::HostEntry],
) -> Result<Rendered, RenderError> {
    let mut env = Environment::new();
    env.add_global("hosts", Value::from_serialize(hosts));
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
    // `{{ V | env_quote }}`: the value in double quotes as systemd reads it back exactly.
    env.add_filter("env_quote", |v: String| -> Value {
        Value::from_safe_string(crate::envfile::quote(&v))
    });
    let marks = |s: &str| s.contains(OPEN) || s.contains(CLOSE);
    let traced = !marks(source) && !vars.values().any(|v| marks(v));
    if traced {
        env.set_formatter(|out, state, value| {
            if value.is_safe() {
                return minijinja::escape_formatter(out, state, value);
            }
            let write = |out: &mut minijinja::Output, c: char| {
                out.write_str(c.encode_utf8(&mut [0; 4])).map_err(|_| {
                    minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "cannot write")
                })
            };
            write(out, OPEN)?;
            minijinja::escape_formatter(out, state, value)?;
            write(out, CLOSE)
        });
    }
    let syntax_error = |e: minijinja::Error| RenderError::Template {
        template: name.to_owned(),
        line: e.line().unwrap_or(0),
        // The error's byte range in the source gives the column (in characters, from 1).
        column: e.range().and_then(|r| {
            let before = source.get(..r.start)?;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            Some(before[line_start..].chars().count() + 1)
        }),
        message: describe(&e),
        unknown_filter: e.kind() == minijinja::ErrorKind::UnknownFilter,
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
    let marked = tmpl.render(vars).map_err(syntax_error)?;
    if !traced {
        return Ok(Rendered {
            text: marked,
            outputs: Vec::new(),
        });
    }
    let mut out = Rendered {
        text: String::with_capacity(marked.len()),
        outputs: Vec::new(),
    };
    let mut start = 0;
    for c in marked.chars() {
        match c {
            OPEN => start = out.text.len(),
            CLOSE => out.outputs.push(start..out.text.len()),
            c => out.text.push(c),
        }
    }
    Ok(out)
}

/// Checks a rendered file against its declared format. `source` is the template and
/// `vars` the values it was rendered with (to name the variable of a faulty output).
pub fn check_format(
    template: &str,
    target: &str,
    rendered: &Rendered,
    source: &str,
    vars: &BTreeMap<String, String>,
    format: FileFormat,
) -> Result<(), RenderError> {
    match format {
        FileFormat::Text => Ok(()),
        FileFormat::Env => check_env(template, target, rendered, source, vars),
    }
}

/// A systemd `EnvironmentFile=` (see [`crate::envfile`]): every line is read as written
/// (no ignored or dropped line, no value taking in a line break), and every `{{ }}` output
/// is read literally — so a value ending in a backslash inside quotes, which would escape
/// the closing quote and fold the next line into it, is refused, naming the variable.
fn check_env(
    template: &str,
    target: &str,
    rendered: &Rendered,
    source: &str,
    vars: &BTreeMap<String, String>,
) -> Result<(), RenderError> {
    let text = &rendered.text;
    let reading = crate::envfile::read(text);
    let line_at = |offset: usize| text[..offset].matches('\n').count() + 1;
    for range in &rendered.outputs {
        // Text in a comment is ignored by systemd, whatever it holds.
        let Some(bad) = range
            .clone()
            .find(|&i| !reading.literal[i] && !reading.comment[i])
        else {
            continue;
        };
        let value = text[range.clone()].to_owned();
        let var = vars
            .iter()
            .find(|(_, v)| **v == value)
            .or_else(|| {
                vars.iter()
                    .find(|(_, v)| !v.is_empty() && value.contains(v.as_str()))
            })
            .map(|(k, _)| k.clone());
        let rline = line_at(range.start);
        let same_line = source
            .lines()
            .nth(rline - 1)
            .is_some_and(|l| l.contains("{{") && var.as_deref().is_none_or(|v| l.contains(v)));
        let line = match &var {
            Some(v) if !same_line => first_use(source, v),
            _ => rline,
        };
        let fault = reading.faults.iter().find(|f| f.line() == line_at(bad));
        let reason = match (text.as_bytes()[bad], fault) {
            (b'\\', _) => "systemd reads a backslash in it as an escape".to_owned(),
            (b'"' | b'\'', _) => {
                "systemd reads a quote in it as the start or end of a quoted part".to_owned()
            }
            (b' ' | b'\t', _) => {
                "systemd drops blanks at the start or end of an unquoted value".to_owned()
            }
            (_, Some(f)) => f.to_string(),
            (b'=', _) => "systemd reads `=` in it as the end of the variable name".to_owned(),
            (b'#' | b';', _) => "systemd reads it as a comment".to_owned(),
            _ => "systemd reads it as syntax, not as text".to_owned(),
        };
        return Err(RenderError::EnvValue(Box::new(EnvValue {
            template: template.to_owned(),
            target: target.to_owned(),
            line,
            var,
            value,
            reason,
            read_as: reading
                .assignment_at(bad)
                .map(|a| (a.key.clone(), a.value.clone())),
        })));
    }
    match reading.faults.first() {
        Some(f) => Err(RenderError::Env {
            template: template.to_owned(),
            target: target.to_owned(),
            line: f.line(),
            message: f.to_string(),
        }),
        None => Ok(()),
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
        let rendered = Rendered {
            text: text.to_owned(),
            outputs: Vec::new(),
        };
        let err =
            check_format("t", "/etc/x", &rendered, text, &vars(&[]), FileFormat::Env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t:3: rendered `/etc/x` is not a valid environment file: the quoted value of `B` does not close on its line (systemd would read the line break into it)"
        );
    }
}
