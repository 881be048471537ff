//! Cluster settings that live in the replicated state: changed only by a
//! statement through the log, so every replica switches at the same entry.
//!
//! Today there is one: the **statement budget**, the work one replicated
//! statement may do before it is aborted. A statement applied from the log
//! must end the same way on every replica, so the budget counts work the
//! same way everywhere (SQLite virtual-machine steps), never wall-clock
//! time.
//!
//! ```sql
//! SET PAXSQL STATEMENT_BUDGET = 500000000   -- a write, through the log
//! SHOW PAXSQL STATEMENT_BUDGET              -- a read
//! ```
//!
//! Both engines recognise these texts before their SQL does.

/// The statement budget when none was set: 100 million SQLite VM steps,
/// roughly 0.3–1 s of one core here, far above what ordinary statements
/// need (an indexed insert takes about a hundred).
pub const STATEMENT_BUDGET_DEFAULT: u64 = 100_000_000;

/// The smallest budget accepted (the budget is counted in steps of this size).
pub const STATEMENT_BUDGET_MIN: u64 = 10_000;

/// The largest budget accepted.
pub const STATEMENT_BUDGET_MAX: u64 = 1 << 50;

/// The internal key the budget is stored under by both engines.
pub(crate) const STATEMENT_BUDGET_KEY: &str = "statement_budget";

/// A settings statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// `SET PAXSQL STATEMENT_BUDGET = n` (a write); `Err` holds why `n` is refused.
    SetStatementBudget(Result<u64, BudgetOutOfRange>),
    /// `SHOW PAXSQL STATEMENT_BUDGET` (a read).
    ShowStatementBudget,
}

/// A budget outside [`STATEMENT_BUDGET_MIN`]..=[`STATEMENT_BUDGET_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetOutOfRange;

impl std::fmt::Display for BudgetOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the statement budget must be between {STATEMENT_BUDGET_MIN} and \
             {STATEMENT_BUDGET_MAX} steps"
        )
    }
}

impl Setting {
    /// Recognises a settings statement (case-insensitive, an optional `;`).
    pub fn parse(sql: &str) -> Option<Setting> {
        let text = sql.trim().trim_end_matches(';');
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == '=')
            .filter(|w| !w.is_empty())
            .collect();
        let is = |i: usize, w: &str| words.get(i).is_some_and(|x| x.eq_ignore_ascii_case(w));
        if !(is(1, "paxsql") && is(2, "statement_budget")) {
            return None;
        }
        if is(0, "show") && words.len() == 3 {
            return Some(Setting::ShowStatementBudget);
        }
        let value = match words.as_slice() {
            [_, _, _, v] => v,
            [_, _, _, to, v] if to.eq_ignore_ascii_case("to") => v,
            _ => return None,
        };
        if !is(0, "set") {
            return None;
        }
        let n = value.replace('_', "").parse::<u64>().ok();
        let checked = n
            .filter(|n| (STATEMENT_BUDGET_MIN..=STATEMENT_BUDGET_MAX).contains(n))
            .ok_or(BudgetOutOfRange);
        Some(Setting::SetStatementBudget(checked))
    }

    /// Whether the statement changes the replicated state.
    pub fn is_write(self) -> bool {
        matches!(self, Setting::SetStatementBudget(_))
    }
}

/// The error of `SET PAXSQL STATEMENT_BUDGET` sent as a read.
pub(crate) const SET_IS_A_WRITE: &str =
    "SET PAXSQL STATEMENT_BUDGET is a write; send it to /db/execute";

/// `SHOW PAXSQL STATEMENT_BUDGET`'s answer; `decl_type` is the engine's
/// name for the column's type.
pub(crate) fn budget_rows(budget: u64, decl_type: &str) -> paxsql_types::StmtResult {
    paxsql_types::StmtResult::Rows {
        columns: vec![STATEMENT_BUDGET_KEY.into()],
        types: vec![decl_type.into()],
        values: vec![vec![paxsql_types::Value::Integer(budget as i64)]],
    }
}

/// The error of a statement stopped by the budget: names the limit and how
/// to raise it. The same text on every replica.
pub fn budget_exceeded(budget: u64) -> String {
    format!(
        "statement budget exceeded: the statement did more than {budget} steps of work and \
         was rolled back on every replica; simplify it or raise the budget with \
         SET PAXSQL STATEMENT_BUDGET = <steps>"
    )
}

/// The error of a read stopped by its time limit.
pub fn read_timed_out(limit: std::time::Duration) -> String {
    format!(
        "read timeout: the query ran longer than {} ms and was interrupted; \
         raise the limit with ?timeout= (HTTP) or SET statement_timeout (pg-wire)",
        limit.as_millis()
    )
}

/// The error of a result above the byte bound.
pub fn result_too_large(bytes_max: usize) -> String {
    format!(
        "result too large: more than {bytes_max} bytes; add a LIMIT, select fewer columns, \
         or raise --result-bytes-max on the node that serves reads"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_set_and_show() {
        assert_eq!(
            Setting::parse("set paxsql statement_budget = 1_000_000;"),
            Some(Setting::SetStatementBudget(Ok(1_000_000)))
        );
        assert_eq!(
            Setting::parse("SET PAXSQL STATEMENT_BUDGET TO 20000"),
            Some(Setting::SetStatementBudget(Ok(20_000)))
        );
        assert_eq!(
            Setting::parse(" SHOW paxsql Statement_Budget "),
            Some(Setting::ShowStatementBudget)
        );
    }

    #[test]
    fn refuses_values_out_of_range() {
        for bad in ["0", "5", "-1", "x", "99999999999999999999"] {
            assert_eq!(
                Setting::parse(&format!("SET PAXSQL STATEMENT_BUDGET = {bad}")),
                Some(Setting::SetStatementBudget(Err(BudgetOutOfRange))),
                "{bad}"
            );
        }
    }

    #[test]
    fn leaves_other_sql_alone() {
        for other in [
            "SET search_path = public",
            "SELECT 1",
            "SET PAXSQL OTHER = 1",
            "SHOW PAXSQL STATEMENT_BUDGET extra",
            "UPDATE paxsql SET statement_budget = 1",
        ] {
            assert_eq!(Setting::parse(other), None, "{other}");
        }
    }
}
