//! The sharding commands: SQL that no SQL parser knows, parsed by hand.
//!
//! ```text
//! ALTER TABLE t SPLIT AT VALUES (101), (201)
//! ALTER RANGE 7 RELOCATE TO GROUP 2        (TO may be left out)
//! SHOW RANGES [FROM TABLE t]
//! ```
//!
//! Keywords are case-insensitive, whitespace and comments are free, a
//! trailing `;` is allowed. A table name may be quoted with `""`, `` ` ``
//! or `[]`; it is returned as written without its quotes, and the router
//! matches it case-insensitively, as SQLite does.
//!
//! [`parse`] answers `None` for text that is not one of these commands, so
//! the caller hands it to SQL, and `Some(Err)` for text that starts like one
//! but is malformed, with the right syntax in the message.

/// A sharding command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `ALTER TABLE t SPLIT AT VALUES (101), (201)`: split the ranges of
    /// `t` at these keys, as given (see [`check_split_keys`]).
    SplitAt {
        /// The table, unquoted, as written.
        table: String,
        /// At least one key.
        keys: Vec<i64>,
    },
    /// `ALTER RANGE 7 RELOCATE TO GROUP 2`: move a range to a data group.
    Relocate {
        /// The range's id.
        range: u64,
        /// The data group to move it to.
        group: u32,
    },
    /// `SHOW RANGES FROM TABLE t`, or `SHOW RANGES` for every table.
    ShowRanges {
        /// The table, unquoted, as written; `None` for every table.
        table: Option<String>,
    },
}

const SPLIT_SYNTAX: &str = "ALTER TABLE <table> SPLIT AT VALUES (<key>), (<key>), ...";
const RELOCATE_SYNTAX: &str = "ALTER RANGE <range id> RELOCATE TO GROUP <group id>";
const SHOW_SYNTAX: &str = "SHOW RANGES [FROM TABLE <table>]";

/// The command `sql` holds: `None` when the text does not start with one of
/// the commands' keyword sequences, `Some(Err)` when it does but is
/// malformed (the message says what is wrong and shows the syntax).
pub fn parse(sql: &str) -> Option<Result<Command, String>> {
    let tokens = lex(sql);
    let mut p = Tokens { tokens, at: 0 };
    if p.keyword("ALTER") {
        if p.keyword("RANGE") {
            return Some(p.relocate().map_err(|e| malformed(&e, RELOCATE_SYNTAX)));
        }
        if !p.keyword("TABLE") {
            return None;
        }
        let table = p.name().ok()?;
        if !p.keyword("SPLIT") {
            return None;
        }
        return Some(p.split(table).map_err(|e| malformed(&e, SPLIT_SYNTAX)));
    }
    if p.keyword("SHOW") && p.keyword("RANGES") {
        return Some(p.show().map_err(|e| malformed(&e, SHOW_SYNTAX)));
    }
    None
}

/// Split keys must be distinct and given in increasing order: the error
/// names the offending key.
pub fn check_split_keys(keys: &[i64]) -> Result<(), String> {
    if keys.is_empty() {
        return Err("give at least one split key".to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = keys.iter().find(|k| !seen.insert(**k)) {
        return Err(format!("split key {twice} given twice"));
    }
    match keys.windows(2).find(|pair| pair[1] < pair[0]) {
        Some(pair) => Err(format!(
            "split keys must be given in increasing order: {} after {}",
            pair[1], pair[0]
        )),
        None => Ok(()),
    }
}

fn malformed(what: &str, syntax: &str) -> String {
    format!("{what}; the syntax is: {syntax}")
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A bare word or number.
    Word(String),
    /// A quoted name, without its quotes.
    Quoted(String),
    Punct(char),
    /// Text the lexer could not read; nothing follows.
    Bad(String),
}

fn lex(sql: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '-' if sql[i..].starts_with("--") => {
                while chars.next_if(|(_, c)| *c != '\n').is_some() {}
            }
            '/' if sql[i..].starts_with("/*") => match sql[i + 2..].find("*/") {
                Some(end) => while chars.next_if(|(j, _)| *j < i + 2 + end + 2).is_some() {},
                None => {
                    out.push(Tok::Bad("an unterminated comment".to_owned()));
                    break;
                }
            },
            '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                let mut name = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    if c == close {
                        // A doubled quote is one quote character in the name.
                        if close != ']' && chars.next_if(|(_, d)| *d == close).is_some() {
                            name.push(c);
                            continue;
                        }
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    out.push(Tok::Bad(format!("an unterminated quoted name {c}{name}")));
                    break;
                }
                out.push(Tok::Quoted(name));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut word = String::from(c);
                while let Some((_, c)) = chars.next_if(|(_, c)| c.is_alphanumeric() || *c == '_') {
                    word.push(c);
                }
                out.push(Tok::Word(word));
            }
            c => out.push(Tok::Punct(c)),
        }
    }
    out
}

struct Tokens {
    tokens: Vec<Tok>,
    at: usize,
}

impl Tokens {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "the end of the text".to_owned(),
            Some(Tok::Word(w)) => format!("`{w}`"),
            Some(Tok::Quoted(q)) => format!("the quoted name `{q}`"),
            Some(Tok::Punct(c)) => format!("`{c}`"),
            Some(Tok::Bad(what)) => what.clone(),
        }
    }

    fn keyword(&mut self, word: &str) -> bool {
        let found = matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(word));
        self.at += usize::from(found);
        found
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), String> {
        if self.keyword(word) {
            return Ok(());
        }
        Err(format!("expected {word} but found {}", self.describe()))
    }

    fn punct(&mut self, c: char) -> bool {
        let found = self.peek() == Some(&Tok::Punct(c));
        self.at += usize::from(found);
        found
    }

    fn name(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Tok::Word(w)) if !w.starts_with(|c: char| c.is_ascii_digit()) => {}
            Some(Tok::Quoted(q)) if !q.is_empty() => {}
            _ => {
                return Err(format!(
                    "expected a table name but found {}",
                    self.describe()
                ))
            }
        }
        let (Some(Tok::Word(name)) | Some(Tok::Quoted(name))) = self.tokens.get(self.at).cloned()
        else {
            unreachable!("checked above")
        };
        self.at += 1;
        Ok(name)
    }

    /// An integer with an optional sign, as text.
    fn integer(&mut self, what: &str) -> Result<String, String> {
        let sign = if self.punct('-') {
            "-"
        } else {
            self.punct('+');
            ""
        };
        match self.peek() {
            Some(Tok::Word(w)) if w.bytes().all(|b| b.is_ascii_digit()) => {
                let text = format!("{sign}{w}");
                self.at += 1;
                Ok(text)
            }
            _ => Err(format!("expected {what} but found {}", self.describe())),
        }
    }

    /// The end of the command, after an optional `;`.
    fn end(&mut self) -> Result<(), String> {
        while self.punct(';') {}
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(format!("unexpected {} after the command", self.describe())),
        }
    }

    fn split(&mut self, table: String) -> Result<Command, String> {
        self.expect_keyword("AT")?;
        self.expect_keyword("VALUES")?;
        let mut keys = Vec::new();
        loop {
            if !self.punct('(') {
                return Err(format!("expected `(` but found {}", self.describe()));
            }
            let text = self.integer("an integer split key")?;
            let key = text
                .parse::<i64>()
                .map_err(|_| format!("split key {text} is not a 64-bit integer"))?;
            if !self.punct(')') {
                return Err(format!(
                    "expected `)` after split key {key} (one key per parentheses) but found {}",
                    self.describe()
                ));
            }
            keys.push(key);
            if !self.punct(',') {
                break;
            }
        }
        self.end()?;
        Ok(Command::SplitAt { table, keys })
    }

    fn relocate(&mut self) -> Result<Command, String> {
        let text = self.integer("a range id")?;
        let range = text
            .parse::<u64>()
            .map_err(|_| format!("range id {text} is not a non-negative 64-bit integer"))?;
        self.expect_keyword("RELOCATE")?;
        self.keyword("TO");
        self.expect_keyword("GROUP")?;
        let text = self.integer("a group id")?;
        let group = text
            .parse::<u32>()
            .map_err(|_| format!("group id {text} is not a non-negative 32-bit integer"))?;
        self.end()?;
        Ok(Command::Relocate { range, group })
    }

    fn show(&mut self) -> Result<Command, String> {
        let table = if self.keyword("FROM") {
            self.expect_keyword("TABLE")?;
            Some(self.name()?)
        } else {
            None
        };
        self.end()?;
        Ok(Command::ShowRanges { table })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> Command {
        parse(sql).expect("a command").expect("well-formed")
    }

    fn err(sql: &str) -> String {
        parse(sql).expect("a command").expect_err("malformed")
    }

    #[test]
    fn split_at_keys_as_given() {
        assert_eq!(
            ok("ALTER TABLE t SPLIT AT VALUES (101), (201)"),
            Command::SplitAt {
                table: "t".into(),
                keys: vec![101, 201]
            }
        );
        assert_eq!(
            ok("  alter\n table \"My Table\"  split at values(-5),( 3 ) ,(-9223372036854775808);;"),
            Command::SplitAt {
                table: "My Table".into(),
                keys: vec![-5, 3, i64::MIN]
            }
        );
        for quoted in ["`T`", "[T]", "\"T\"", "T"] {
            let sql = format!("ALTER TABLE {quoted} SPLIT AT VALUES (1) -- comment");
            assert_eq!(
                ok(&sql),
                Command::SplitAt {
                    table: "T".into(),
                    keys: vec![1]
                },
                "{sql}"
            );
        }
        assert_eq!(
            ok("ALTER TABLE \"a\"\"b\" /* c */ SPLIT AT VALUES (9)"),
            Command::SplitAt {
                table: "a\"b".into(),
                keys: vec![9]
            }
        );
    }

    #[test]
    fn malformed_split_says_what_is_wrong_and_shows_the_syntax() {
        let e = err("ALTER TABLE t SPLIT AT VALUES");
        assert!(
            e.contains("expected `(` but found the end of the text"),
            "{e}"
        );
        assert!(e.contains(SPLIT_SYNTAX), "{e}");
        let e = err("ALTER TABLE t SPLIT AT VALUES (1, 2)");
        assert!(e.contains("one key per parentheses"), "{e}");
        let e = err("ALTER TABLE t SPLIT AT VALUES ('a')");
        assert!(e.contains("expected an integer split key"), "{e}");
        let e = err("ALTER TABLE t SPLIT AT VALUES (9223372036854775808)");
        assert!(e.contains("not a 64-bit integer"), "{e}");
        let e = err("ALTER TABLE t SPLIT VALUES (1)");
        assert!(e.contains("expected AT but found `VALUES`"), "{e}");
        let e = err("ALTER TABLE t SPLIT AT VALUES (1) (2)");
        assert!(e.contains("unexpected `(` after the command"), "{e}");
        let e = err("ALTER TABLE t SPLIT AT VALUES (1); SELECT 1");
        assert!(e.contains("unexpected `SELECT`"), "{e}");
    }

    #[test]
    fn relocate_with_or_without_to() {
        let want = Command::Relocate { range: 7, group: 2 };
        assert_eq!(ok("ALTER RANGE 7 RELOCATE TO GROUP 2"), want);
        assert_eq!(ok("alter range 7 relocate group 2;"), want);
        let e = err("ALTER RANGE x RELOCATE TO GROUP 2");
        assert!(e.contains("expected a range id but found `x`"), "{e}");
        assert!(e.contains(RELOCATE_SYNTAX), "{e}");
        let e = err("ALTER RANGE -1 RELOCATE TO GROUP 2");
        assert!(e.contains("range id -1 is not a non-negative"), "{e}");
        let e = err("ALTER RANGE 1 RELOCATE TO GROUP 4294967296");
        assert!(e.contains("group id 4294967296"), "{e}");
        let e = err("ALTER RANGE 1 MOVE TO GROUP 2");
        assert!(e.contains("expected RELOCATE but found `MOVE`"), "{e}");
    }

    #[test]
    fn show_ranges_of_one_table_or_all() {
        assert_eq!(ok("SHOW RANGES"), Command::ShowRanges { table: None });
        assert_eq!(
            ok("show ranges from table [Orders];"),
            Command::ShowRanges {
                table: Some("Orders".into())
            }
        );
        let e = err("SHOW RANGES FROM t");
        assert!(e.contains("expected TABLE but found `t`"), "{e}");
        assert!(e.contains(SHOW_SYNTAX), "{e}");
        let e = err("SHOW RANGES FROM TABLE");
        assert!(e.contains("expected a table name"), "{e}");
        let e = err("SHOW RANGES FROM TABLE \"t");
        assert!(e.contains("unterminated quoted name"), "{e}");
    }

    #[test]
    fn other_sql_is_not_a_command() {
        for sql in [
            "SELECT 1",
            "ALTER TABLE t ADD COLUMN c",
            "ALTER TABLE t RENAME TO split",
            "ALTER TABLE",
            "SHOW TABLES",
            "",
            "-- SHOW RANGES\nSELECT 1",
            "ALTERTABLE t SPLIT AT VALUES (1)",
        ] {
            assert_eq!(parse(sql), None, "{sql}");
        }
    }

    #[test]
    fn split_keys_must_increase_strictly() {
        assert_eq!(check_split_keys(&[1, 5, 9]), Ok(()));
        assert_eq!(check_split_keys(&[i64::MIN, i64::MAX]), Ok(()));
        assert_eq!(
            check_split_keys(&[101, 301, 201]),
            Err("split keys must be given in increasing order: 201 after 301".into())
        );
        assert_eq!(
            check_split_keys(&[101, 101]),
            Err("split key 101 given twice".into())
        );
        assert_eq!(
            check_split_keys(&[101, 201, 101]),
            Err("split key 101 given twice".into())
        );
        assert!(check_split_keys(&[]).is_err());
    }
}
