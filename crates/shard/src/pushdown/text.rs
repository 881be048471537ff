//! Cutting a clause out of a statement's own text.
//!
//! The pushed SQL is the query's text, not sqlparser's rendering of its
//! tree: a rendering can differ from what was written (sqlparser reads
//! some SQLite spellings as other dialects' constructs), while the same
//! text under the same schema means the same to SQLite on a group as in the
//! gathered database.

use std::ops::{ControlFlow, Range};

use paxsql_types::Value;
use sqlparser::ast::{Value as AstValue, ValueWithSpan, Visit, Visitor};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use crate::keys::params::Bindings;

/// A statement's tokens (comments and whitespace left out), each with its
/// byte range in the text.
#[derive(Debug)]
pub(super) struct Text<'a> {
    sql: &'a str,
    /// Invariant: `tokens.len() == bytes.len()`, both in text order.
    tokens: Vec<TokenWithSpan>,
    bytes: Vec<Range<usize>>,
}

/// One clause: the tokens after its keywords up to the next clause.
#[derive(Clone, Debug)]
pub(super) struct Clause {
    /// Indices into the statement's tokens.
    tokens: Range<usize>,
    /// The clause's text (without its keywords), comments included.
    bytes: Range<usize>,
}

impl<'a> Text<'a> {
    /// The tokens of `sql`; `None` if it does not tokenize or a token's
    /// position cannot be placed in the text.
    pub(super) fn new(sql: &'a str) -> Option<Self> {
        let all = Tokenizer::new(&SQLiteDialect {}, sql)
            .tokenize_with_location()
            .ok()?;
        let mut cursor = Cursor::new(sql);
        let (mut tokens, mut bytes) = (Vec::new(), Vec::new());
        for t in all {
            if matches!(t.token, Token::Whitespace(_) | Token::EOF) {
                continue;
            }
            let start = cursor.seek(t.span.start)?;
            let end = cursor.seek(t.span.end)?;
            if start >= end {
                return None;
            }
            bytes.push(start..end);
            tokens.push(t);
        }
        Some(Text { sql, tokens, bytes })
    }

    /// The one clause opened, outside any parentheses, by the keywords
    /// `opener` (`WHERE`, `ORDER BY`), ending before the first of `closers`
    /// or `;` outside parentheses, or at the end. `None` if the opener is
    /// not there exactly once, or the clause is empty.
    pub(super) fn clause(&self, opener: &[Keyword], closers: &[Keyword]) -> Option<Clause> {
        let top = self.top_level()?;
        let opens = |at: usize| {
            opener
                .iter()
                .enumerate()
                .all(|(k, kw)| top.get(at + k).is_some_and(|&i| self.is(i, *kw)))
        };
        let mut found = (0..top.len()).filter(|&at| opens(at));
        let at = found.next()?;
        if found.next().is_some() {
            return None;
        }
        let first = top[at + opener.len() - 1] + 1;
        let last = top[at + opener.len()..]
            .iter()
            .copied()
            .find(|&i| {
                self.tokens[i].token == Token::SemiColon || closers.iter().any(|kw| self.is(i, *kw))
            })
            .unwrap_or(self.tokens.len());
        if first >= last {
            return None;
        }
        let start = self.bytes[first - 1].end;
        let end = match self.bytes.get(last) {
            Some(b) => b.start,
            None => self.sql.len(),
        };
        Some(Clause {
            tokens: first..last,
            bytes: start..end,
        })
    }

    /// The clause's text as written.
    pub(super) fn source(&self, clause: &Clause) -> &'a str {
        &self.sql[clause.bytes.clone()]
    }

    /// The clause's tokens.
    pub(super) fn tokens(&self, clause: &Clause) -> impl Iterator<Item = &Token> {
        self.tokens[clause.tokens.clone()].iter().map(|t| &t.token)
    }

    /// The clause's text with each placeholder of `tree` (the clause as
    /// parsed) replaced by the literal of the value bound to it; `None` if
    /// some value is unbound or has no literal that reads back exactly, or
    /// a placeholder is left in the text.
    pub(super) fn with_literals(
        &self,
        clause: &Clause,
        tree: &impl Visit,
        bindings: &Bindings<'_>,
    ) -> Option<String> {
        let mut found = Vec::new();
        for (text, span) in placeholders(tree) {
            let start = self.bytes[self.token_starting(span.start)?].start;
            let end = self.bytes[self.token_ending(span.end)?].end;
            let inside = clause.bytes.start <= start && end <= clause.bytes.end;
            if !inside || self.sql.get(start..end) != Some(text.as_str()) {
                return None;
            }
            found.push((start..end, literal(bindings.value(&text, span)?)?));
        }
        found.sort_by_key(|(at, _)| at.start);
        let mut out = String::new();
        let mut copied = clause.bytes.start;
        for (at, literal) in found {
            out.push_str(self.sql.get(copied..at.start)?);
            // Spaces and parentheses: `-?` must not become `--5`.
            out.push_str(&format!(" ({literal}) "));
            copied = at.end;
        }
        out.push_str(&self.sql[copied..clause.bytes.end]);
        // Whatever sqlparser did not see as a placeholder SQLite would
        // bind to NULL: none may be left.
        let left = Tokenizer::new(&SQLiteDialect {}, &out).tokenize().ok()?;
        let unbound = left.iter().any(|t| {
            matches!(
                t,
                Token::Placeholder(_) | Token::Colon | Token::AtSign | Token::Char('$' | '#')
            )
        });
        (!unbound).then_some(out)
    }

    /// The token starting at `at`.
    fn token_starting(&self, at: Location) -> Option<usize> {
        let key = (at.line, at.column);
        self.tokens
            .binary_search_by_key(&key, |t| (t.span.start.line, t.span.start.column))
            .ok()
    }

    /// The token ending at `at`.
    fn token_ending(&self, at: Location) -> Option<usize> {
        let key = (at.line, at.column);
        self.tokens
            .binary_search_by_key(&key, |t| (t.span.end.line, t.span.end.column))
            .ok()
    }

    /// Indices of the tokens outside any parentheses (the parentheses that
    /// open and close a group included); `None` if they do not balance.
    fn top_level(&self) -> Option<Vec<usize>> {
        let mut depth = 0usize;
        let mut top = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            match t.token {
                Token::LParen | Token::LBracket => {
                    if depth == 0 {
                        top.push(i);
                    }
                    depth += 1;
                }
                Token::RParen | Token::RBracket => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        top.push(i);
                    }
                }
                _ if depth == 0 => top.push(i),
                _ => {}
            }
        }
        (depth == 0).then_some(top)
    }

    /// Whether token `i` is the unquoted keyword `kw`.
    fn is(&self, i: usize, kw: Keyword) -> bool {
        matches!(&self.tokens[i].token, Token::Word(w) if w.quote_style.is_none() && w.keyword == kw)
    }
}

/// The placeholders in `tree`, with where they are written.
fn placeholders(tree: &impl Visit) -> Vec<(String, Span)> {
    struct Collect(Vec<(String, Span)>);
    impl Visitor for Collect {
        type Break = ();
        fn pre_visit_value(&mut self, v: &ValueWithSpan) -> ControlFlow<()> {
            if let AstValue::Placeholder(text) = &v.value {
                self.0.push((text.clone(), v.span));
            }
            ControlFlow::Continue(())
        }
    }
    let mut found = Collect(Vec::new());
    let _ = tree.visit(&mut found);
    found.0
}

/// The SQL literal SQLite reads back as exactly `value`, if there is one
/// (reals are left out: reading a decimal text back could round).
fn literal(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => "NULL".into(),
        // Its absolute value is not an integer literal.
        Value::Integer(i64::MIN) => "-9223372036854775807 - 1".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(_) => return None,
        Value::Text(s) if s.contains('\0') => return None,
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Blob(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
            format!("X'{hex}'")
        }
    })
}

/// Byte offsets of tokenizer locations (1-based line, and column counted
/// in characters, as sqlparser counts them), asked in text order: each
/// character is walked over once.
struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    /// Invariant: the location of the character `chars` yields next.
    at: Location,
    len: usize,
}

impl<'a> Cursor<'a> {
    fn new(sql: &'a str) -> Self {
        Cursor {
            chars: sql.char_indices().peekable(),
            at: Location { line: 1, column: 1 },
            len: sql.len(),
        }
    }

    /// The offset of `to`; `None` if it lies before the last one asked
    /// for, or outside the text.
    fn seek(&mut self, to: Location) -> Option<usize> {
        let key = |l: Location| (l.line, l.column);
        while key(self.at) < key(to) {
            let (_, c) = self.chars.next()?;
            if c == '\n' {
                self.at = Location {
                    line: self.at.line + 1,
                    column: 1,
                };
            } else {
                self.at.column += 1;
            }
        }
        if key(self.at) != key(to) {
            return None;
        }
        Some(self.chars.peek().map_or(self.len, |&(i, _)| i))
    }
}
