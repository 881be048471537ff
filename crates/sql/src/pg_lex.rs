//! A small lexer for PostgreSQL's SQL, with byte offsets.
//!
//! Used where paxsql must find things in a statement's text without
//! understanding all of it: placeholders to inline, clock functions to
//! rewrite, names to refuse. It knows PostgreSQL's quoting rules (single-
//! and double-quoted, `E'...'` escapes, `$tag$` dollar quotes, nested block
//! comments), so nothing inside a string or a comment is ever mistaken for
//! code, and it never fails: text it cannot classify is punctuation.
//!
//! sqlparser's tokenizer is not used here because it reports positions as
//! line and column and has no notion of `?`/`:name` placeholders in the
//! PostgreSQL dialect; byte ranges make splicing trivially correct.

use std::ops::Range;

/// What a token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    /// Spaces and comments.
    Space,
    /// An unquoted word (identifier or keyword), as written.
    Word,
    /// A double-quoted identifier; the name without quotes.
    Quoted(String),
    /// A single-quoted string (also `E'...'`); the value it denotes.
    Str(String),
    /// A dollar-quoted string; its body.
    Dollar(String),
    /// A number.
    Number,
    /// `?` (SQLite/rqlite placeholder, or PostgreSQL's jsonb operator).
    Question,
    /// `$1`, `$2`, ...
    Positional(usize),
    /// `:name`, `@name` or `$name`: the sigil and the name.
    Named(char, String),
    /// Any other character.
    Punct(char),
}

/// A token and where it is in the text.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) range: Range<usize>,
}

impl Token {
    /// The token's text.
    pub(crate) fn text<'s>(&self, sql: &'s str) -> &'s str {
        &sql[self.range.clone()]
    }
}

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn ident_char(c: char) -> bool {
    ident_start(c) || c.is_ascii_digit() || c == '$'
}

/// Splits `sql` into tokens covering it entirely, in order.
pub(crate) fn lex(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let char_at = |i: usize| sql[i..].chars().next().unwrap_or('\0');
    while i < b.len() {
        let start = i;
        let c = char_at(i);
        let tok = if c.is_whitespace() {
            i += c.len_utf8();
            while i < b.len() && char_at(i).is_whitespace() {
                i += char_at(i).len_utf8();
            }
            Tok::Space
        } else if sql[i..].starts_with("--") {
            i = sql[i..].find('\n').map_or(b.len(), |n| i + n);
            Tok::Space
        } else if sql[i..].starts_with("/*") {
            let mut depth = 0usize;
            while i < b.len() {
                if sql[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if sql[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += char_at(i).len_utf8();
                }
            }
            Tok::Space
        } else if c == '\'' {
            let (value, end) = single_quoted(sql, i, false);
            i = end;
            Tok::Str(value)
        } else if (c == 'e' || c == 'E') && b.get(i + 1) == Some(&b'\'') {
            let (value, end) = single_quoted(sql, i + 1, true);
            i = end;
            Tok::Str(value)
        } else if c == '"' {
            let mut name = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        name.push('"');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                let ch = char_at(i);
                name.push(ch);
                i += ch.len_utf8();
            }
            Tok::Quoted(name)
        } else if c == '$' {
            lex_dollar(sql, &mut i)
        } else if ident_start(c) {
            while i < b.len() && ident_char(char_at(i)) {
                i += char_at(i).len_utf8();
            }
            Tok::Word
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                // An exponent's sign belongs to the number: 1e-5.
                if (b[i] == b'e' || b[i] == b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
                    i += 1;
                }
                i += 1;
            }
            Tok::Number
        } else if c == '?' {
            i += 1;
            Tok::Question
        } else if (c == ':' || c == '@')
            && b.get(i + 1).is_some_and(|n| ident_start(char::from(*n)))
            && (i == 0 || b[i - 1] != b':')
        {
            i += 1;
            while i < b.len() && ident_char(char_at(i)) && b[i] != b'$' {
                i += char_at(i).len_utf8();
            }
            Tok::Named(c, sql[start + 1..i].to_owned())
        } else {
            i += c.len_utf8();
            Tok::Punct(c)
        };
        out.push(Token {
            tok,
            range: start..i,
        });
    }
    out
}

/// A `'...'` string starting at `open` (the quote); its value and end.
fn single_quoted(sql: &str, open: usize, escapes: bool) -> (String, usize) {
    let b = sql.as_bytes();
    let mut value = String::new();
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\'' if b.get(i + 1) == Some(&b'\'') => {
                value.push('\'');
                i += 2;
            }
            b'\'' => return (value, i + 1),
            b'\\' if escapes && i + 1 < b.len() => {
                let next = sql[i + 1..].chars().next().unwrap_or('\\');
                value.push(match next {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
                i += 1 + next.len_utf8();
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or('\0');
                value.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    (value, b.len())
}

/// `$1`, `$name`, or a `$tag$ ... $tag$` string, at `*i`.
fn lex_dollar(sql: &str, i: &mut usize) -> Tok {
    let b = sql.as_bytes();
    let start = *i;
    let mut j = start + 1;
    if b.get(j).is_some_and(u8::is_ascii_digit) {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        *i = j;
        return Tok::Positional(sql[start + 1..j].parse().unwrap_or(usize::MAX));
    }
    while j < b.len() && ident_char(sql[j..].chars().next().unwrap_or('\0')) && b[j] != b'$' {
        j += sql[j..].chars().next().map_or(1, char::len_utf8);
    }
    if b.get(j) == Some(&b'$') {
        let tag = &sql[start..=j];
        let body_start = j + 1;
        match sql[body_start..].find(tag) {
            Some(n) => {
                *i = body_start + n + tag.len();
                return Tok::Dollar(sql[body_start..body_start + n].to_owned());
            }
            None => {
                *i = b.len();
                return Tok::Dollar(sql[body_start..].to_owned());
            }
        }
    }
    if j > start + 1 {
        *i = j;
        return Tok::Named('$', sql[start + 1..j].to_owned());
    }
    *i = start + 1;
    Tok::Punct('$')
}

/// Tokens other than spaces and comments.
pub(crate) fn significant(tokens: &[Token]) -> Vec<&Token> {
    tokens.iter().filter(|t| t.tok != Tok::Space).collect()
}

/// The word, upper-cased, if the token is an unquoted word.
pub(crate) fn word_upper(sql: &str, t: &Token) -> Option<String> {
    (t.tok == Tok::Word).then(|| t.text(sql).to_ascii_uppercase())
}

/// Replaces byte ranges of `sql` (sorted, not overlapping) with new text.
pub(crate) fn splice(sql: &str, edits: &mut [(Range<usize>, String)]) -> String {
    edits.sort_by_key(|(r, _)| (r.start, r.end));
    let mut out = String::with_capacity(sql.len() + 32 * edits.len());
    let mut copied = 0;
    for (range, text) in edits.iter() {
        assert!(range.start >= copied, "overlapping edits");
        out.push_str(&sql[copied..range.start]);
        out.push_str(text);
        copied = range.end;
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<Tok> {
        lex(sql)
            .into_iter()
            .filter(|t| t.tok != Tok::Space)
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn strings_comments_and_dollar_quotes_hide_their_content() {
        let sql =
            "SELECT 'a?''b', E'x\\'?', $$ ? now() $$, $f$ $1 $f$ -- ?\n /* ? /* ? */ */ \"?\"";
        let k = kinds(sql);
        assert!(!k.contains(&Tok::Question), "{k:?}");
        assert!(k.contains(&Tok::Str("a?'b".into())));
        assert!(k.contains(&Tok::Str("x'?".into())));
        assert!(k.contains(&Tok::Dollar(" ? now() ".into())));
        assert!(k.contains(&Tok::Quoted("?".into())));
        let covered: usize = lex(sql).iter().map(|t| t.range.len()).sum();
        assert_eq!(covered, sql.len());
    }

    #[test]
    fn placeholders_and_casts() {
        assert_eq!(
            kinds("? $12 :name x::int @v $n"),
            vec![
                Tok::Question,
                Tok::Positional(12),
                Tok::Named(':', "name".into()),
                Tok::Word,
                Tok::Punct(':'),
                Tok::Punct(':'),
                Tok::Word,
                Tok::Named('@', "v".into()),
                Tok::Named('$', "n".into()),
            ]
        );
    }
}
