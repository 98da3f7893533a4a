//! systemd environment files (`EnvironmentFile=`), read the way systemd reads them.
//!
//! The reader is a state machine with the states of systemd's `parse_env_file_internal`
//! (src/basic/env-file.c), written from its documented behaviour: blanks around `=` and
//! around the key are dropped; `#` and `;` start a comment only where a key could start;
//! `'…'` keeps everything literally; in `"…"` a backslash before `"`, `\`, `` ` `` or `$`
//! stands for that character, a backslash before a newline joins the lines, and any other
//! backslash stays; outside quotes a backslash takes the next character literally and a
//! backslash before a newline joins the lines; quoted and unquoted parts next to each other
//! are joined (`A="a" "b"` is `ab`); trailing blanks of an unquoted value are dropped.
//! systemd then drops assignments whose name is not a valid variable name or whose value
//! holds control characters (execute.c, `strv_env_clean`).
//!
//! Besides what systemd reads, the reader notes every place where a file is *not read as
//! written*: lines systemd ignores, assignments it drops, values that take in a line break,
//! comments whose trailing backslash systemd before v254 joined with the next line. And it
//! records, byte by byte, which bytes of the file end up in a name or value as they are, so
//! that a template's `{{ VAR }}` output can be checked to be read literally.

use std::collections::BTreeMap;
use std::fmt;

/// One assignment as systemd reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub key: String,
    pub value: String,
    /// The 1-based line its key is on.
    pub line: usize,
    /// Byte range of the file it was read from.
    pub span: std::ops::Range<usize>,
}

/// A place where systemd does not read the file as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A line that is neither blank, a comment, nor `KEY=VALUE`: systemd ignores it.
    NotAssignment { line: usize, text: String },
    /// A name that is not a variable name: systemd drops the assignment.
    BadName { line: usize, key: String },
    /// A value with a line break (a quote that does not close on its line, or an escaped
    /// line break inside quotes is fine; a literal one is not).
    LineBreak { line: usize, key: String },
    /// A value with a control character: systemd drops the assignment.
    ControlCharacter { line: usize, key: String },
    /// A quote still open at the end of the file.
    Unclosed { line: usize, key: String },
    /// The file ends in a backslash, which systemd drops.
    TrailingBackslash { line: usize, key: String },
    /// A comment ending in a backslash: systemd before v254 (Debian 12 has 252) reads the
    /// next line as part of the comment, later versions do not.
    CommentBackslash { line: usize },
    /// A NUL byte: systemd stops reading there.
    Nul { line: usize },
}

impl Fault {
    /// The 1-based line of the fault.
    pub fn line(&self) -> usize {
        match self {
            Fault::NotAssignment { line, .. }
            | Fault::BadName { line, .. }
            | Fault::LineBreak { line, .. }
            | Fault::ControlCharacter { line, .. }
            | Fault::Unclosed { line, .. }
            | Fault::TrailingBackslash { line, .. }
            | Fault::CommentBackslash { line }
            | Fault::Nul { line } => *line,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::NotAssignment { text, .. } => write!(
                f,
                "line `{}` is not KEY=VALUE (systemd ignores it)",
                shorten(text)
            ),
            Fault::BadName { key, .. } => write!(
                f,
                "`{}` is not a variable name (systemd drops the line)",
                shorten(key)
            ),
            Fault::LineBreak { key, .. } => write!(
                f,
                "the quoted value of `{key}` does not close on its line (systemd would read the line break into it)"
            ),
            Fault::ControlCharacter { key, .. } => write!(
                f,
                "the value of `{key}` holds a control character (systemd drops the line)"
            ),
            Fault::Unclosed { key, .. } => {
                write!(f, "the quoted value of `{key}` never closes")
            }
            Fault::TrailingBackslash { key, .. } => write!(
                f,
                "the value of `{key}` ends the file with a backslash (systemd drops it)"
            ),
            Fault::CommentBackslash { .. } => write!(
                f,
                "a comment ends in a backslash (systemd 252 reads the next line as part of the comment, systemd 254 and later do not)"
            ),
            Fault::Nul { .. } => write!(f, "a NUL byte (systemd stops reading there)"),
        }
    }
}

/// What systemd reads from a file, and where it does not read it as written.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// Every assignment systemd keeps, in file order (a later one of the same name wins).
    pub assignments: Vec<Assignment>,
    pub faults: Vec<Fault>,
    /// Per byte of the file: whether it is read as itself into a name or a kept value.
    pub literal: Vec<bool>,
    /// Per byte of the file: whether it is inside a comment (ignored, whatever it is; a
    /// trailing backslash is a fault of its own).
    pub comment: Vec<bool>,
}

impl Reading {
    /// The environment a unit gets from the file: name → value, the last assignment winning.
    pub fn environment(&self) -> BTreeMap<String, String> {
        self.assignments
            .iter()
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect()
    }

    /// The assignment read from the bytes around `offset`, if any.
    pub fn assignment_at(&self, offset: usize) -> Option<&Assignment> {
        self.assignments.iter().find(|a| a.span.contains(&offset))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    SingleQuote,
    DoubleQuote,
    DoubleQuoteEscape,
    Comment,
    CommentEscape,
}

const fn is_newline(c: u8) -> bool {
    c == b'\n' || c == b'\r'
}

const fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// Characters a backslash escapes inside double quotes (the shell's set).
const fn is_shell_special(c: u8) -> bool {
    matches!(c, b'"' | b'\\' | b'`' | b'$')
}

/// A name systemd accepts for an environment variable: letters, digits and `_`, not
/// starting with a digit.
pub fn is_valid_name(key: &str) -> bool {
    !key.is_empty()
        && !key.as_bytes()[0].is_ascii_digit()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The bytes read so far for one assignment, each with the offset it came from (`None` for
/// bytes that are not in the file as themselves).
#[derive(Default)]
struct Pending {
    key: Vec<(u8, usize)>,
    value: Vec<(u8, Option<usize>)>,
    start: usize,
    /// Where trailing blanks of the key (and of an unquoted value) begin.
    key_blank: Option<usize>,
    value_blank: Option<usize>,
    /// A line break was read into the value (inside quotes).
    line_break: bool,
}

/// Reads `text` as systemd reads an environment file.
pub fn read(text: &str) -> Reading {
    let bytes = text.as_bytes();
    let mut out = Reading {
        literal: vec![false; bytes.len()],
        comment: vec![false; bytes.len()],
        ..Reading::default()
    };
    let line_of = |offset: usize| bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
    let mut state = State::PreKey;
    let mut p = Pending::default();
    let mut comment_start = 0;

    let push = |p: &mut Pending, state: State, end: usize, out: &mut Reading| {
        let mut p = std::mem::take(p);
        if let Some(k) = p.key_blank {
            p.key.truncate(k);
        }
        if state == State::Value
            && let Some(v) = p.value_blank
        {
            p.value.truncate(v);
        }
        let key = String::from_utf8_lossy(&p.key.iter().map(|(b, _)| *b).collect::<Vec<_>>())
            .into_owned();
        let value = String::from_utf8_lossy(&p.value.iter().map(|(b, _)| *b).collect::<Vec<_>>())
            .into_owned();
        let line = line_of(p.start);
        let fault = if !is_valid_name(&key) {
            Some(Fault::BadName {
                line,
                key: key.clone(),
            })
        } else if p.line_break {
            Some(Fault::LineBreak {
                line,
                key: key.clone(),
            })
        } else if value.chars().any(|c| c.is_control() && c != '\t') {
            Some(Fault::ControlCharacter {
                line,
                key: key.clone(),
            })
        } else {
            None
        };
        match fault {
            // A dropped assignment: none of its bytes is read.
            Some(f @ (Fault::BadName { .. } | Fault::ControlCharacter { .. })) => {
                out.faults.push(f)
            }
            f => {
                out.faults.extend(f);
                for (_, i) in &p.key {
                    out.literal[*i] = true;
                }
                for (_, i) in &p.value {
                    if let Some(i) = i {
                        out.literal[*i] = true;
                    }
                }
                out.assignments.push(Assignment {
                    key,
                    value,
                    line,
                    span: p.start..end,
                });
            }
        }
    };

    for (i, &c) in bytes.iter().enumerate() {
        if c == 0 {
            out.faults.push(Fault::Nul { line: line_of(i) });
            // systemd stops at the NUL: nothing after it is read.
            for l in &mut out.literal[i..] {
                *l = false;
            }
            for l in &mut out.comment[i..] {
                *l = false;
            }
            return out;
        }
        match state {
            State::PreKey => {
                if c == b'#' || c == b';' {
                    state = State::Comment;
                    out.comment[i] = true;
                    comment_start = i;
                } else if !is_blank(c) {
                    state = State::Key;
                    p.start = i;
                    p.key_blank = None;
                    p.key.push((c, i));
                }
            }
            State::Key => {
                if is_newline(c) {
                    let text = String::from_utf8_lossy(&bytes[p.start..i]).into_owned();
                    out.faults.push(Fault::NotAssignment {
                        line: line_of(p.start),
                        text,
                    });
                    p = Pending::default();
                    state = State::PreKey;
                } else if c == b'=' {
                    state = State::PreValue;
                    p.value_blank = None;
                } else {
                    if !is_blank(c) {
                        p.key_blank = None;
                    } else if p.key_blank.is_none() {
                        p.key_blank = Some(p.key.len());
                    }
                    p.key.push((c, i));
                }
            }
            State::PreValue => {
                if is_newline(c) {
                    push(&mut p, state, i, &mut out);
                    state = State::PreKey;
                } else if c == b'\'' {
                    state = State::SingleQuote;
                } else if c == b'"' {
                    state = State::DoubleQuote;
                } else if c == b'\\' {
                    state = State::ValueEscape;
                } else if !is_blank(c) {
                    state = State::Value;
                    p.value.push((c, Some(i)));
                }
            }
            State::Value => {
                if is_newline(c) {
                    push(&mut p, state, i, &mut out);
                    state = State::PreKey;
                } else if c == b'\\' {
                    state = State::ValueEscape;
                    p.value_blank = None;
                } else {
                    if !is_blank(c) {
                        p.value_blank = None;
                    } else if p.value_blank.is_none() {
                        p.value_blank = Some(p.value.len());
                    }
                    p.value.push((c, Some(i)));
                }
            }
            State::ValueEscape => {
                state = State::Value;
                // An escaped line break joins the lines; any other character is taken as
                // it is (the backslash is not).
                if !is_newline(c) {
                    p.value.push((c, Some(i)));
                }
            }
            State::SingleQuote => {
                if c == b'\'' {
                    state = State::PreValue;
                } else {
                    p.line_break |= is_newline(c);
                    p.value.push((c, Some(i)));
                }
            }
            State::DoubleQuote => {
                if c == b'"' {
                    state = State::PreValue;
                } else if c == b'\\' {
                    state = State::DoubleQuoteEscape;
                } else {
                    p.line_break |= is_newline(c);
                    p.value.push((c, Some(i)));
                }
            }
            State::DoubleQuoteEscape => {
                state = State::DoubleQuote;
                if is_shell_special(c) {
                    p.value.push((c, Some(i)));
                } else if c != b'\n' {
                    // The backslash stays, as in the shell.
                    p.value.push((b'\\', Some(i - 1)));
                    p.line_break |= c == b'\r';
                    p.value.push((c, Some(i)));
                }
            }
            State::Comment => {
                out.comment[i] = !is_newline(c);
                if c == b'\\' {
                    state = State::CommentEscape;
                } else if is_newline(c) {
                    state = State::PreKey;
                }
            }
            State::CommentEscape => {
                out.comment[i] = !is_newline(c);
                if is_newline(c) {
                    out.faults.push(Fault::CommentBackslash {
                        line: line_of(comment_start),
                    });
                    state = State::PreKey;
                } else {
                    state = State::Comment;
                }
            }
        }
    }
    let end = bytes.len();
    match state {
        State::PreValue | State::Value => push(&mut p, state, end, &mut out),
        State::ValueEscape => {
            let (line, key) = (line_of(p.start), key_text(&p));
            push(&mut p, state, end, &mut out);
            out.faults.push(Fault::TrailingBackslash { line, key });
        }
        State::SingleQuote | State::DoubleQuote | State::DoubleQuoteEscape => {
            let (line, key) = (line_of(p.start), key_text(&p));
            push(&mut p, state, end, &mut out);
            out.faults.push(Fault::Unclosed { line, key });
        }
        State::Key => out.faults.push(Fault::NotAssignment {
            line: line_of(p.start),
            text: String::from_utf8_lossy(&bytes[p.start..]).into_owned(),
        }),
        State::CommentEscape => out.faults.push(Fault::CommentBackslash {
            line: line_of(comment_start),
        }),
        State::PreKey | State::Comment => {}
    }
    out.faults.sort_by_key(Fault::line);
    out
}

fn key_text(p: &Pending) -> String {
    let mut key: Vec<u8> = p.key.iter().map(|(b, _)| *b).collect();
    if let Some(k) = p.key_blank {
        key.truncate(k);
    }
    String::from_utf8_lossy(&key).into_owned()
}

/// Quotes `value` so that systemd reads it back exactly: in double quotes, with `"`, `\`,
/// `` ` `` and `$` preceded by a backslash. (A value with a line break or another control
/// character cannot be written: systemd drops or splits it.)
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c.is_ascii() && is_shell_special(c as u8) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> Vec<(String, String)> {
        let r = read(text);
        assert_eq!(r.faults, vec![], "{text:?}");
        r.assignments
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect()
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn systemd_rules() {
        assert_eq!(env("KEY=\"a=\\\"b\\\"\"\n"), kv(&[("KEY", "a=\"b\"")]));
        assert_eq!(env("KEY = \"v\"\n"), kv(&[("KEY", "v")]));
        assert_eq!(env("A='x\\y'\n"), kv(&[("A", "x\\y")]));
        assert_eq!(env("A=\"x\\y\"\n"), kv(&[("A", "x\\y")]));
        assert_eq!(env("A=x\\y\n"), kv(&[("A", "xy")]));
        assert_eq!(env("A=\"a\" 'b'c\n"), kv(&[("A", "abc")]));
        assert_eq!(env("A=one \\\n two  \n"), kv(&[("A", "one  two")]));
        assert_eq!(env("A=\"one \\\ntwo\"\n"), kv(&[("A", "one two")]));
        assert_eq!(
            env("  # c\n;d\nA=x # not a comment\n"),
            kv(&[("A", "x # not a comment")])
        );
        assert_eq!(env("A=\nB\t=\t 'x'\r\n"), kv(&[("A", ""), ("B", "x")]));
        assert_eq!(env("A=x\\ \n"), kv(&[("A", "x ")]));
    }

    #[test]
    fn faults() {
        let r = read("A=\"x\\\"\nB=\"y\"\n");
        assert_eq!(
            r.faults,
            vec![Fault::LineBreak {
                line: 1,
                key: "A".into()
            }]
        );
        assert_eq!(r.environment().get("A").unwrap(), "x\"\nB=y\"");
        assert_eq!(
            read("# c \\\nA=1\n").faults,
            vec![Fault::CommentBackslash { line: 1 }]
        );
        assert_eq!(
            read("1A=x\n").faults,
            vec![Fault::BadName {
                line: 1,
                key: "1A".into()
            }]
        );
        assert_eq!(
            read("x\n").faults,
            vec![Fault::NotAssignment {
                line: 1,
                text: "x".into()
            }]
        );
    }

    #[test]
    fn quote_round_trips() {
        for v in ["", "a b", "x\\", "\"$`'", "a=\\\"b\\\""] {
            assert_eq!(env(&format!("K={}\n", quote(v))), kv(&[("K", v)]));
        }
    }
}
