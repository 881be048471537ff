//! Interactive transactions, as the engines see them.
//!
//! A transaction's statements run twice. While the client talks, each new
//! statement runs with all the earlier ones in a *probe*: on the replica's
//! writing connection, at a linearizable point, in an engine transaction
//! that is always rolled back ([`crate::SqlEngine::probe`]). The client gets
//! the last statement's result, and the session keeps every result's
//! digest. At `COMMIT` the statements go through the log once more, led by
//! [`Directive::Expect`] with those digests: every replica runs them at the
//! commit's place in the log and applies them only if each result has the
//! digest the client was answered. So the transaction takes effect as if it
//! ran alone at that place — serializable, and strict, since the place is
//! inside the transaction's real-time span — or not at all
//! ([`SERIALIZATION_FAILURE`]). Nothing is locked and the apply loop never
//! waits.

use crate::ranges::Directive;
use paxsql_types::{RequestError, Response, Statement, StmtResult, SERIALIZATION_FAILURE};

/// A commit's statements: the transaction's, led by the expect directive
/// with the digests its probes answered.
pub fn commit_request(stmts: Vec<Statement>, digests: Vec<u64>) -> Vec<Statement> {
    let mut all = Vec::with_capacity(stmts.len() + 1);
    all.push(Directive::Expect(digests).statement());
    all.extend(stmts);
    all
}

/// The answer to a [`commit_request`]: the statements' own results, or
/// [`RequestError::Conflict`] when the directive failed.
pub fn commit_answer(mut resp: Response) -> Result<Response, RequestError> {
    if resp.results.is_empty() {
        return Err(RequestError::Unavailable(
            "the commit returned no result".into(),
        ));
    }
    match resp.results.remove(0) {
        StmtResult::Error(m) if m.starts_with(SERIALIZATION_FAILURE) => {
            Err(RequestError::Conflict(m))
        }
        StmtResult::Error(m) => Err(RequestError::BadRequest(m)),
        _ => Ok(resp),
    }
}

/// Where the [`Directive::Expect`] of a request is, if it has one.
pub fn expect_at(stmts: &[Statement]) -> Option<usize> {
    stmts
        .iter()
        .position(|s| matches!(Directive::parse(&s.sql), Some(Ok(Directive::Expect(_)))))
}

/// Checks the results of the statements after an expect directive at `at`
/// against its digests; the serialization failure to report, if any.
/// `results` may stop early (a failed statement ends a transaction).
pub fn check_expected(directive: &Statement, results: &[StmtResult], at: usize) -> Option<String> {
    let Some(Ok(Directive::Expect(want))) = Directive::parse(&directive.sql) else {
        return None;
    };
    if results.len() <= at {
        // The request failed before the directive (a claim): that error
        // stands.
        return None;
    }
    let got = &results[at + 1..];
    let k = (0..want.len().max(got.len()))
        .find(|&k| want.get(k).copied() != got.get(k).map(StmtResult::digest))?;
    let what = match got.get(k) {
        Some(StmtResult::Error(m)) => format!("failed at commit ({m})"),
        Some(_) => "gives another result at commit than it gave".to_owned(),
        None => "did not run".to_owned(),
    };
    Some(format!(
        "{SERIALIZATION_FAILURE}: statement {} of the transaction's {} {what}: another \
         transaction changed what it read or wrote first; nothing was applied, run the whole \
         transaction again",
        k + 1,
        want.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(n: u64) -> StmtResult {
        StmtResult::Exec {
            last_insert_id: 0,
            rows_affected: n,
        }
    }

    fn expect(results: &[StmtResult]) -> Statement {
        Directive::Expect(results.iter().map(StmtResult::digest).collect()).statement()
    }

    #[test]
    fn equal_results_pass_and_any_difference_fails() {
        let answered = [exec(1), exec(2)];
        let d = expect(&answered);
        let mut got = vec![StmtResult::Exec {
            last_insert_id: 0,
            rows_affected: 0,
        }];
        got.extend(answered.iter().cloned());
        assert_eq!(check_expected(&d, &got, 0), None);
        got[2] = exec(3);
        let why = check_expected(&d, &got, 0).expect("differs");
        assert!(why.starts_with(SERIALIZATION_FAILURE), "{why}");
        assert!(why.contains("statement 2 of the transaction's 2"), "{why}");
        got[2] = StmtResult::Error("UNIQUE constraint failed".into());
        assert!(check_expected(&d, &got, 0).unwrap().contains("UNIQUE"));
        got.truncate(2);
        assert!(check_expected(&d, &got, 0).unwrap().contains("did not run"));
    }

    #[test]
    fn a_request_that_failed_before_the_directive_keeps_its_error() {
        let d = expect(&[exec(1)]);
        let got = vec![StmtResult::Error("wrong range".into())];
        assert_eq!(check_expected(&d, &got, 1), None);
    }

    #[test]
    fn finds_the_directive() {
        let stmts = vec![
            Directive::Claim(vec![(1, 2)]).statement(),
            expect(&[]),
            Statement::new("SELECT 1"),
        ];
        assert_eq!(expect_at(&stmts), Some(1));
        assert_eq!(expect_at(&stmts[2..]), None);
    }
}
