package rewrite

import "fmt"

// SQLSTATE codes the rewriter produces.
const (
	CodeFeatureNotSupported = "0A000" // operation unsupported on an encrypted column
)

// RefusalError is a statement pgveil will not run because it cannot be
// computed on ciphertext. It names the column and the operation, never a value.
type RefusalError struct {
	Table  string // "schema.table"
	Column string // column name ("" when the refusal is not about one column)
	Op     string // what was attempted: "LIKE", "ORDER BY", ...
	Hint   string // what is supported instead
	Reason string // metrics label: like, range, order_by, group_by, distinct, function, equality_without_index, insert_select, unsupported
}

func (e *RefusalError) Error() string {
	if e.Column == "" {
		return fmt.Sprintf("pgveil: %s is not supported on encrypted table %s", e.Op, e.Table)
	}
	return fmt.Sprintf("pgveil: %s is not supported on encrypted column %s.%s", e.Op, e.Table, e.Column)
}

// SQLState returns 0A000.
func (e *RefusalError) SQLState() string { return CodeFeatureNotSupported }
