//! A small lexer over the SQL text clients send: enough to split a simple
//! query into statements, read a statement's leading keywords, and find its
//! `$N` placeholders, with byte offsets and without being fooled by strings,
//! quoted identifiers or comments.
//!
//! sqlparser does the real parsing where it is needed (type inference); this
//! lexer never fails, so every statement can at least be split and routed.

/// One token of SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    /// A keyword or bare identifier, as written.
    Word(&'a str),
    /// A `$N` placeholder (PostgreSQL's).
    Param(u32),
    /// Any other placeholder: `?`, `?N`, `:name`, `@name`, `$name`.
    OtherParam,
    /// A string literal (also `E'..'`, `X'..'` and `$$..$$`).
    Str,
    /// A quoted identifier (`"x"`, `` `x` ``, `[x]`).
    Ident(&'a str),
    /// A numeric literal.
    Num,
    /// `;`
    Semi,
    /// Any other character.
    Punct(char),
}

/// A token and where it is in the text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    pub tok: Tok<'a>,
    pub start: usize,
    /// Just past the token's last byte.
    pub end: usize,
}

/// Tokenizes `sql`; comments and whitespace are dropped. Never fails: an
/// unterminated string or comment runs to the end of the text.
pub(crate) fn lex(sql: &str) -> Vec<Token<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let before = out.len();
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = find(b, i + 2, b"*/").map_or(b.len(), |e| e + 2);
            }
            b'\'' => {
                i = skip_quoted(b, i, b'\'', false);
                out.push(Token {
                    tok: Tok::Str,
                    start,
                    end: start,
                });
            }
            b'E' | b'e' | b'X' | b'x' | b'B' | b'b' | b'N' | b'n'
                if b.get(i + 1) == Some(&b'\'') =>
            {
                let escapes = c == b'E' || c == b'e';
                i = skip_quoted(b, i + 1, b'\'', escapes);
                out.push(Token {
                    tok: Tok::Str,
                    start,
                    end: start,
                });
            }
            b'"' | b'`' => {
                i = skip_quoted(b, i, c, false);
                out.push(Token {
                    tok: Tok::Ident(&sql[start..i]),
                    start,
                    end: start,
                });
            }
            b'[' => {
                i = find(b, i + 1, b"]").map_or(b.len(), |e| e + 1);
                out.push(Token {
                    tok: Tok::Ident(&sql[start..i]),
                    start,
                    end: start,
                });
            }
            b'$' => i = lex_dollar(sql, i, &mut out),
            b'?' => {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::OtherParam,
                    start,
                    end: start,
                });
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                // PostgreSQL's `::` cast, never a parameter.
                i += 2;
                out.push(Token {
                    tok: Tok::Punct(':'),
                    start,
                    end: start,
                });
            }
            b':' | b'@' if b.get(i + 1).is_some_and(|&n| is_word_start(n)) => {
                i += 1;
                while i < b.len() && is_word_char(b[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::OtherParam,
                    start,
                    end: start,
                });
            }
            b';' => {
                i += 1;
                out.push(Token {
                    tok: Tok::Semi,
                    start,
                    end: start,
                });
            }
            _ if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                i = skip_number(b, i);
                out.push(Token {
                    tok: Tok::Num,
                    start,
                    end: start,
                });
            }
            _ if is_word_start(c) => {
                while i < b.len() && is_word_char(b[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Word(&sql[start..i]),
                    start,
                    end: start,
                });
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or('\0');
                i += ch.len_utf8().max(1);
                out.push(Token {
                    tok: Tok::Punct(ch),
                    start,
                    end: start,
                });
            }
        }
        if out.len() > before {
            if let Some(t) = out.last_mut() {
                t.end = i;
            }
        }
    }
    out
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    (from..b.len().saturating_sub(needle.len() - 1)).find(|&i| b[i..].starts_with(needle))
}

/// Skips a quoted run starting at the opening quote `b[i]`; a doubled quote
/// is an escaped quote, and with `backslash` so is `\'`.
fn skip_quoted(b: &[u8], mut i: usize, quote: u8, backslash: bool) -> usize {
    i += 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn skip_number(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
        let exp = (b[i] == b'e' || b[i] == b'E') && matches!(b.get(i + 1), Some(b'+' | b'-'));
        i += if exp { 2 } else { 1 };
    }
    i
}

/// `$1` (a placeholder), `$$...$$` / `$tag$...$tag$` (a string), `$name`
/// (SQLite's named parameter).
fn lex_dollar<'a>(sql: &'a str, start: usize, out: &mut Vec<Token<'a>>) -> usize {
    let b = sql.as_bytes();
    let mut i = start + 1;
    if b.get(i).is_some_and(u8::is_ascii_digit) {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let tok = sql[start + 1..i]
            .parse()
            .map_or(Tok::OtherParam, Tok::Param);
        out.push(Token {
            tok,
            start,
            end: start,
        });
        return i;
    }
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    if b.get(i) == Some(&b'$') {
        let tag = &b[start..=i];
        let end = find(b, i + 1, tag).map_or(b.len(), |e| e + tag.len());
        out.push(Token {
            tok: Tok::Str,
            start,
            end: start,
        });
        return end;
    }
    out.push(Token {
        tok: Tok::OtherParam,
        start,
        end: start,
    });
    i
}

/// Splits a simple query into its statements (trimmed, without the `;`).
/// Semicolons inside a `CREATE TRIGGER ... BEGIN ... END` body do not split.
pub(crate) fn split(sql: &str) -> Vec<&str> {
    let tokens = lex(sql);
    let mut out = Vec::new();
    let mut begin: Option<usize> = None;
    let mut scan = TriggerScan::default();
    for t in &tokens {
        if t.tok == Tok::Semi && scan.depth == 0 {
            if let Some(s) = begin.take() {
                out.push(sql[s..t.start].trim());
            }
            scan = TriggerScan::default();
            continue;
        }
        if begin.is_none() {
            if t.tok == Tok::Semi {
                continue;
            }
            begin = Some(t.start);
        }
        scan.step(&t.tok);
    }
    if let Some(s) = begin {
        out.push(sql[s..].trim());
    }
    out
}

/// Tracks `BEGIN ... END` nesting inside `CREATE TRIGGER`.
#[derive(Default)]
struct TriggerScan {
    words: usize,
    create: bool,
    trigger: bool,
    depth: u32,
}

impl TriggerScan {
    fn step(&mut self, tok: &Tok<'_>) {
        let Tok::Word(w) = tok else { return };
        self.words += 1;
        if self.words == 1 {
            self.create = w.eq_ignore_ascii_case("CREATE");
            return;
        }
        if !self.create {
            return;
        }
        if !self.trigger {
            self.trigger = self.words <= 4 && w.eq_ignore_ascii_case("TRIGGER");
            return;
        }
        if w.eq_ignore_ascii_case("BEGIN") || (self.depth > 0 && w.eq_ignore_ascii_case("CASE")) {
            self.depth += 1;
        } else if self.depth > 0 && w.eq_ignore_ascii_case("END") {
            self.depth -= 1;
        }
    }
}

/// The first `n` words of a statement, upper-cased (quoted identifiers and
/// other tokens stop the scan).
pub(crate) fn leading_words(sql: &str, n: usize) -> Vec<String> {
    lex(sql)
        .into_iter()
        .map_while(|t| match t.tok {
            Tok::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        })
        .take(n)
        .collect()
}

/// The placeholders of one statement.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Placeholders {
    /// The `$N` numbers used, ascending, without repeats.
    pub numbered: Vec<u32>,
    /// Whether `?`, `:name`, `@name` or `$name` appear.
    pub other: bool,
}

impl Placeholders {
    /// How many parameters the statement takes: the largest `$N`.
    pub fn count(&self) -> usize {
        self.numbered.last().map_or(0, |&n| n as usize)
    }
}

/// Finds the placeholders of one statement.
pub(crate) fn placeholders(sql: &str) -> Placeholders {
    let mut p = Placeholders::default();
    for t in lex(sql) {
        match t.tok {
            Tok::Param(n) => p.numbered.push(n),
            Tok::OtherParam => p.other = true,
            _ => {}
        }
    }
    p.numbered.sort_unstable();
    p.numbered.dedup();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_strings_and_comments() {
        let s = split("SELECT 'a;b'; -- c;d\n SELECT \"x;y\" FROM t;; /* ; */ SELECT 3");
        assert_eq!(s, vec!["SELECT 'a;b'", "SELECT \"x;y\" FROM t", "SELECT 3"]);
        assert!(split(" ;; ").is_empty());
        assert_eq!(split("SELECT 1"), vec!["SELECT 1"]);
    }

    #[test]
    fn trigger_bodies_stay_whole() {
        let sql = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN \
                   UPDATE u SET n = CASE WHEN n > 0 THEN n + 1 ELSE 1 END; \
                   INSERT INTO log VALUES (1); END; SELECT 1";
        let s = split(sql);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].ends_with("END"));
        assert_eq!(s[1], "SELECT 1");
        // BEGIN outside a trigger is a statement of its own.
        assert_eq!(split("BEGIN; SELECT 1; COMMIT").len(), 3);
    }

    #[test]
    fn finds_numbered_placeholders_only_outside_literals() {
        let p = placeholders("SELECT $2, '$3', \"$4\", $1 -- $9\n WHERE a = $2");
        assert_eq!(p.numbered, vec![1, 2]);
        assert!(!p.other);
        assert_eq!(p.count(), 2);
        assert!(placeholders("SELECT ?").other);
        assert!(placeholders("SELECT :name").other);
        assert!(!placeholders("SELECT a::text").other);
        assert!(!placeholders("SELECT $$ $1 $$").other);
        assert!(placeholders("SELECT $$ $1 $$").numbered.is_empty());
        assert_eq!(placeholders("SELECT E'\\' $1'").count(), 0);
    }

    #[test]
    fn leading_words_are_upper_cased() {
        assert_eq!(
            leading_words("  /* hi */ set Local x = 1", 3),
            vec!["SET", "LOCAL", "X"]
        );
        assert_eq!(leading_words("SHOW \"x\"", 3), vec!["SHOW"]);
    }
}
