//! Schema changes and the integer primary key of a created table.

use sqlparser::ast::{
    AlterTableOperation, ColumnDef, ColumnOption, CreateTable, Expr, ObjectType,
    RenameTableNameKind, Statement, TableConstraint,
};

use super::tables::table_name;
use super::SchemaChange;

/// The schema change `statement` makes, if it makes one.
pub(crate) fn change(statement: &Statement) -> Option<SchemaChange> {
    Some(match statement {
        Statement::CreateTable(create) => SchemaChange::CreateTable {
            table: table_name(&create.name),
            pk: rowid_alias(create),
        },
        // A virtual table's rowid is the module's: not a key to range over.
        Statement::CreateVirtualTable { name, .. } => SchemaChange::CreateTable {
            table: table_name(name),
            pk: None,
        },
        Statement::AlterTable(alter) => SchemaChange::AlterTable {
            table: table_name(&alter.name),
            renamed_to: alter.operations.iter().find_map(|op| match op {
                AlterTableOperation::RenameTable {
                    table_name: RenameTableNameKind::To(new) | RenameTableNameKind::As(new),
                } => Some(table_name(new)),
                _ => None,
            }),
        },
        Statement::Drop {
            object_type: ObjectType::Table,
            names,
            ..
        } => match names.as_slice() {
            [name] => SchemaChange::DropTable {
                table: table_name(name),
            },
            _ => SchemaChange::Other,
        },
        Statement::Drop { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateView(_)
        | Statement::CreateTrigger(_)
        | Statement::DropTrigger(_) => SchemaChange::Other,
        _ => return None,
    })
}

/// The column that is an alias for the rowid, lower-case: SQLite's rule is
/// a column declared with type exactly `INTEGER` that is the table's whole
/// primary key, in a rowid table. (`INT PRIMARY KEY` is an ordinary key.)
fn rowid_alias(create: &CreateTable) -> Option<String> {
    if create.without_rowid || create.query.is_some() {
        return None;
    }
    let is_integer = |c: &ColumnDef| c.data_type.to_string().eq_ignore_ascii_case("INTEGER");
    let column_key = create.columns.iter().find(|c| {
        c.options
            .iter()
            .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
    });
    let table_key = create.constraints.iter().find_map(|c| match c {
        TableConstraint::PrimaryKey(pk) => match pk.columns.as_slice() {
            [only] => match &only.column.expr {
                Expr::Identifier(name) => create
                    .columns
                    .iter()
                    .find(|c| c.name.value.eq_ignore_ascii_case(&name.value)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    });
    match (column_key, table_key) {
        (Some(c), None) | (None, Some(c)) if is_integer(c) => {
            Some(c.name.value.to_ascii_lowercase())
        }
        _ => None,
    }
}
