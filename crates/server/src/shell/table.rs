//! Results as aligned text tables.
//!
//! ```text
//! +----+-------+
//! | id | name  |
//! +----+-------+
//! |  1 | fiona |
//! +----+-------+
//! (1 row)
//! ```
//!
//! Numbers are right-aligned, everything else left-aligned; widths are
//! display columns (CJK and emoji take two), so the borders line up in a
//! terminal. A value never spans lines: control characters are shown
//! escaped (`\n`, `\t`, `\u{1b}`), NULL as `NULL`, a BLOB as `X'0a1b'`.

use serde_json::Value;
use unicode_width::UnicodeWidthStr;

/// One cell, as text, and whether it is right-aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) text: String,
    pub(crate) right: bool,
}

impl Cell {
    /// A left-aligned cell of text shown as is (but on one line).
    pub(crate) fn text(text: impl AsRef<str>) -> Cell {
        Cell {
            text: one_line(text.as_ref()),
            right: false,
        }
    }

    /// A right-aligned cell.
    pub(crate) fn number(n: impl ToString) -> Cell {
        Cell {
            text: n.to_string(),
            right: true,
        }
    }

    /// A JSON value from a result row. BLOBs arrive as arrays of bytes
    /// (the shell asks with `blob_array`).
    pub(crate) fn value(v: &Value) -> Cell {
        match v {
            Value::Null => Cell::text("NULL"),
            Value::Number(n) => Cell::number(n),
            Value::String(s) => Cell::text(s),
            Value::Bool(b) => Cell::text(b.to_string()),
            Value::Array(bytes) => Cell::text(blob_literal(bytes)),
            Value::Object(_) => Cell::text(v.to_string()),
        }
    }
}

/// `header` and `rows` as a bordered table followed by a `(N rows)` line;
/// every line ends with `\n`.
pub(crate) fn render(header: &[String], rows: &[Vec<Cell>]) -> String {
    let header: Vec<String> = header.iter().map(|h| one_line(h)).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i == widths.len() {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.text.width());
        }
    }
    let rule = rule(&widths);
    let mut out = String::new();
    out.push_str(&rule);
    let header_cells: Vec<Cell> = header.into_iter().map(Cell::text).collect();
    out.push_str(&line(&header_cells, &widths));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(row, &widths));
    }
    if !rows.is_empty() {
        out.push_str(&rule);
    }
    out.push_str(&count_line(rows.len(), "row"));
    out
}

/// `(1 row)`, `(2 rows)`; with a newline.
pub(crate) fn count_line(n: usize, noun: &str) -> String {
    format!("({n} {noun}{})\n", if n == 1 { "" } else { "s" })
}

fn rule(widths: &[usize]) -> String {
    let mut s = String::from("+");
    for w in widths {
        s.push_str(&"-".repeat(w + 2));
        s.push('+');
    }
    s.push('\n');
    s
}

fn line(cells: &[Cell], widths: &[usize]) -> String {
    let mut s = String::from("|");
    for (i, w) in widths.iter().enumerate() {
        let blank = Cell::text("");
        let cell = cells.get(i).unwrap_or(&blank);
        let pad = " ".repeat(w - cell.text.width());
        if cell.right {
            s.push_str(&format!(" {pad}{} |", cell.text));
        } else {
            s.push_str(&format!(" {}{pad} |", cell.text));
        }
    }
    s.push('\n');
    s
}

/// `text` with control characters escaped, so that it stays on one line.
fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// `X'00ff'`, SQLite's BLOB literal, from a JSON array of bytes.
fn blob_literal(bytes: &[Value]) -> String {
    let mut s = String::from("X'");
    for b in bytes {
        match b.as_u64() {
            Some(b) => s.push_str(&format!("{b:02x}")),
            None => s.push_str("??"),
        }
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cells(values: Value) -> Vec<Vec<Cell>> {
        values
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row.as_array().unwrap().iter().map(Cell::value).collect())
            .collect()
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let out = render(
            &["id".into(), "name".into()],
            &cells(json!([[1, "fiona"], [10, "bo"]])),
        );
        assert_eq!(
            out,
            "+----+-------+\n\
             | id | name  |\n\
             +----+-------+\n\
             |  1 | fiona |\n\
             | 10 | bo    |\n\
             +----+-------+\n\
             (2 rows)\n"
        );
    }

    #[test]
    fn no_rows_still_shows_the_header() {
        let out = render(&["x".into()], &[]);
        assert_eq!(out, "+---+\n| x |\n+---+\n(0 rows)\n");
    }

    #[test]
    fn values_are_shown_on_one_line() {
        let row = &cells(json!([[null, "a\nb\t\u{1b}", [0, 255, 16], 1.5, true]]))[0];
        let texts: Vec<&str> = row.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            ["NULL", "a\\nb\\t\\u{1b}", "X'00ff10'", "1.5", "true"]
        );
    }

    #[test]
    fn wide_characters_count_as_two_columns() {
        let out = render(&["w".into()], &cells(json!([["日本"], ["ab"]])));
        assert!(out.contains("| 日本 |\n| ab   |\n"), "{out}");
    }
}
