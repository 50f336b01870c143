//! The keyset condition, order and limit of a page, in SQLite's SQL.

use rusqlite::types::Value;

use crate::store::{PageRequest, SortValue, StoreError};

/// A position component as an SQL parameter.
fn to_sql(v: &SortValue) -> Value {
    match v {
        SortValue::Int(i) => Value::Integer(*i),
        SortValue::Text(s) => Value::Text(s.clone()),
    }
}

/// Paging of SQLite queries.
pub(super) trait SqlPage {
    /// Ends a query whose WHERE clause is in `sql` (its parameters in `values`) with the
    /// page: the keyset condition "after the position" over `columns` (the sort columns, id
    /// last), the order over them (ascending, or `descending`), and the LIMIT of
    /// [`PageRequest::fetch`] rows. [`StoreError::BadPosition`] when the position does not
    /// have one value per column.
    fn finish_query(
        &self,
        sql: &mut String,
        values: &mut Vec<Value>,
        columns: &[&str],
        descending: bool,
    ) -> Result<(), StoreError>;
}

impl SqlPage for PageRequest {
    fn finish_query(
        &self,
        sql: &mut String,
        values: &mut Vec<Value>,
        columns: &[&str],
        descending: bool,
    ) -> Result<(), StoreError> {
        let (op, dir) = if descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(after) = &self.after {
            if after.len() != columns.len() {
                return Err(StoreError::BadPosition);
            }
            let marks = vec!["?"; columns.len()].join(", ");
            sql.push_str(&format!(" AND ({}) {op} ({marks})", columns.join(", ")));
            values.extend(after.iter().map(to_sql));
        }
        let order: Vec<String> = columns.iter().map(|c| format!("{c} {dir}")).collect();
        sql.push_str(&format!(" ORDER BY {} LIMIT ?", order.join(", ")));
        values.push(Value::Integer(self.fetch()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_ends_with_the_position_order_and_limit() {
        let page = PageRequest {
            after: Some(vec![SortValue::Int(5), SortValue::Text("dev_a".into())]),
            limit: 10,
        };
        let (mut sql, mut values) = (String::from("WHERE x"), Vec::new());
        page.finish_query(&mut sql, &mut values, &["d.enrolled_at", "d.id"], false)
            .unwrap();
        assert_eq!(
            sql,
            "WHERE x AND (d.enrolled_at, d.id) > (?, ?) ORDER BY d.enrolled_at ASC, d.id ASC LIMIT ?"
        );
        assert_eq!(values.len(), 3);
        let (mut sql, mut values) = (String::new(), Vec::new());
        page.finish_query(&mut sql, &mut values, &["a", "b"], true)
            .unwrap();
        assert_eq!(sql, " AND (a, b) < (?, ?) ORDER BY a DESC, b DESC LIMIT ?");
        let err = page.finish_query(&mut String::new(), &mut Vec::new(), &["d.id"], false);
        assert!(matches!(err, Err(StoreError::BadPosition)));
        let (mut sql, mut values) = (String::new(), Vec::new());
        PageRequest::first(1)
            .finish_query(&mut sql, &mut values, &["d.id"], false)
            .unwrap();
        assert_eq!(sql, " ORDER BY d.id ASC LIMIT ?");
        assert_eq!(values, [Value::Integer(2)]);
    }
}
