//! Where one SQL statement ends and the next begins, as the shell reads
//! lines.
//!
//! A statement ends at a `;` that is not inside a string (`'...'`), a quoted
//! name (`"..."`, `` `...` ``, `[...]`) or a comment (`-- ...`, `/* ... */`).
//! `CREATE TRIGGER` is the one statement with `;` inside it: its body ends
//! at `END;`. This is what SQLite's own `sqlite3_complete()` decides, with
//! the same blind spot: a statement inside a trigger body that ends with
//! `CASE ... END;` ends the trigger early (put the `CASE` in parentheses).
//!
//! The server refuses more than one statement per string, so the shell
//! cuts its input here and sends each statement on its own.

/// The statements complete in `text`, each trimmed and without its `;`,
/// and the text after the last one (an unfinished statement, to be
/// continued by the next line). Statements holding only comments and
/// whitespace are dropped.
pub(crate) fn complete_statements(text: &str) -> (Vec<String>, String) {
    let mut scanner = Scanner::default();
    let mut statements = Vec::new();
    let mut start = 0;
    for (at, c) in text.char_indices() {
        if scanner.feed(c) {
            let statement = text[start..at].trim();
            if !is_blank(statement) {
                statements.push(statement.to_owned());
            }
            start = at + c.len_utf8();
        }
    }
    (statements, text[start..].to_owned())
}

/// Whether `text` holds nothing but whitespace and finished comments: the
/// shell runs nothing for it and does not wait for more.
pub(crate) fn is_blank(text: &str) -> bool {
    let mut scanner = Scanner::default();
    for c in text.chars() {
        scanner.feed(c);
        if scanner.has_content {
            return false;
        }
    }
    // An open block comment is not finished: more lines belong to it.
    scanner.state != State::BlockComment
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Code,
    /// Inside a quoted string or name; the char closes it.
    Quoted(char),
    LineComment,
    BlockComment,
}

/// A character-at-a-time scanner of one statement.
#[derive(Debug, Default)]
struct Scanner {
    state: State,
    /// The char before the current one, for `--`, `/*` and `*/`.
    prev: char,
    /// The word being read, upper-cased.
    word: String,
    /// The first three words of the statement, to recognise
    /// `CREATE [TEMP|TEMPORARY] TRIGGER`.
    leading: Vec<String>,
    /// The last finished token was the word `END`.
    after_end: bool,
    /// Anything but whitespace and comments has been seen.
    has_content: bool,
}

impl Scanner {
    /// Takes the next char; true when it is the `;` that ends the statement
    /// (the scanner is then ready for the next one).
    fn feed(&mut self, c: char) -> bool {
        let prev = std::mem::replace(&mut self.prev, c);
        match self.state {
            State::Quoted(close) => {
                // A doubled quote ('it''s') closes and reopens: same outcome.
                if c == close {
                    self.state = State::Code;
                }
                false
            }
            State::LineComment => {
                if c == '\n' {
                    self.state = State::Code;
                }
                false
            }
            State::BlockComment => {
                if prev == '*' && c == '/' {
                    self.state = State::Code;
                    // So that `*/*` does not open another comment.
                    self.prev = ' ';
                }
                false
            }
            State::Code => self.feed_code(prev, c),
        }
    }

    fn feed_code(&mut self, prev: char, c: char) -> bool {
        if c.is_alphanumeric() || c == '_' || c == '$' {
            self.word.extend(c.to_uppercase());
            self.has_content = true;
            return false;
        }
        self.end_word();
        match c {
            '-' if prev == '-' => {
                self.state = State::LineComment;
                // The first '-' was taken for code; it was the comment's.
                self.prev = ' ';
            }
            '*' if prev == '/' => {
                self.state = State::BlockComment;
                self.prev = ' ';
            }
            '\'' | '"' | '`' => self.open_quote(c),
            '[' => self.open_quote(']'),
            ';' => {
                let ends = !self.in_trigger() || self.after_end;
                if ends {
                    *self = Scanner::default();
                    return true;
                }
                self.after_end = false;
            }
            c if c.is_whitespace() || c == '-' || c == '/' => {}
            _ => {
                self.has_content = true;
                self.after_end = false;
            }
        }
        false
    }

    fn open_quote(&mut self, close: char) {
        self.state = State::Quoted(close);
        self.has_content = true;
        self.after_end = false;
    }

    fn end_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        let word = std::mem::take(&mut self.word);
        self.after_end = word == "END";
        if self.leading.len() < 3 {
            self.leading.push(word);
        }
    }

    fn in_trigger(&self) -> bool {
        let words: Vec<&str> = self.leading.iter().map(String::as_str).collect();
        matches!(
            words.as_slice(),
            ["CREATE", "TRIGGER", ..] | ["CREATE", "TEMP" | "TEMPORARY", "TRIGGER"]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> (Vec<String>, String) {
        complete_statements(text)
    }

    #[test]
    fn statements_end_at_semicolons() {
        let (s, rest) = split("SELECT 1; SELECT 2;\nSELECT");
        assert_eq!(s, ["SELECT 1", "SELECT 2"]);
        assert_eq!(rest, "\nSELECT");
    }

    #[test]
    fn a_statement_may_span_lines() {
        let (s, rest) = split("SELECT\n  1\n");
        assert!(s.is_empty());
        let (s, rest) = split(&format!("{rest}  + 2;\n"));
        assert_eq!(s, ["SELECT\n  1\n  + 2"]);
        assert_eq!(rest, "\n");
    }

    #[test]
    fn semicolons_in_strings_names_and_comments_do_not_end_a_statement() {
        let (s, _) =
            split("INSERT INTO \"a;b\" VALUES ('x;y', 'it''s;', `c;`, [d;]) -- e;f\n/* g; */;");
        assert_eq!(
            s,
            ["INSERT INTO \"a;b\" VALUES ('x;y', 'it''s;', `c;`, [d;]) -- e;f\n/* g; */"]
        );
    }

    #[test]
    fn an_open_string_waits_for_more_lines() {
        let (s, rest) = split("INSERT INTO t VALUES ('a;\n");
        assert!(s.is_empty());
        assert_eq!(rest, "INSERT INTO t VALUES ('a;\n");
    }

    #[test]
    fn a_trigger_body_ends_at_end_semicolon() {
        let text = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  UPDATE t SET x = 1;\n  DELETE FROM u;\nEND;SELECT 1;";
        let (s, rest) = split(text);
        assert_eq!(
            s,
            [
                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  UPDATE t SET x = 1;\n  DELETE FROM u;\nEND",
                "SELECT 1"
            ]
        );
        assert_eq!(rest, "");
        let (s, _) = split("create temp trigger tr after insert on t begin select 1; end ;");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn end_outside_a_trigger_is_an_ordinary_word() {
        let (s, _) = split("SELECT CASE WHEN 1 THEN 2 END; SELECT 3;");
        assert_eq!(s, ["SELECT CASE WHEN 1 THEN 2 END", "SELECT 3"]);
    }

    #[test]
    fn empty_and_comment_only_statements_are_dropped() {
        let (s, rest) = split(";  ; -- nothing\n; /* still nothing */ ;");
        assert!(s.is_empty());
        assert_eq!(rest, "");
    }

    #[test]
    fn blank_text_is_whitespace_and_finished_comments() {
        assert!(is_blank("  \n"));
        assert!(is_blank("-- a comment"));
        assert!(is_blank("/* a */ -- b\n"));
        assert!(!is_blank("/* open"));
        assert!(!is_blank("SELECT"));
        assert!(!is_blank("- 1"));
        assert!(!is_blank("'"));
    }

    #[test]
    fn operators_next_to_comments_are_kept_apart() {
        // In `*/*` the `/` closes a comment and opens none; `a-1` is no comment.
        let (s, _) = split("SELECT 2 /* x */* 3; SELECT a-1;");
        assert_eq!(s, ["SELECT 2 /* x */* 3", "SELECT a-1"]);
    }
}
