package rewrite

import "fmt"

// SQLSTATE codes the rewriter produces.
const (
	CodeFeatureNotSupported = "0A000" // operation unsupported on an encrypted column
	CodeSyntaxError         = "42601" // a statement touching a configured table that pgveil cannot parse

	// PostgreSQL's own errors, for statements PostgreSQL would refuse
	// where pgveil's rewrite of them would run.
	codeUndefinedFunction = "42883" // `email = 42`: no operator text = integer
	codeWrongObjectType   = "42809" // `email = ANY(42)`: ANY wants an array
)

// Refusal reasons (RefusalError.Reason), a closed set usable as metric labels.
const (
	ReasonLike                 = "like"
	ReasonRange                = "range"
	ReasonOrderBy              = "order_by"
	ReasonGroupBy              = "group_by"
	ReasonDistinct             = "distinct"
	ReasonFunction             = "function"
	ReasonEqualityWithoutIndex = "equality_without_index"
	ReasonInsertSelect         = "insert_select"
	ReasonUnsupported          = "unsupported"
	ReasonParseError           = "parse_error"
)

// Reasons lists every Reason value, for pre-initializing metric series.
var Reasons = []string{ReasonLike, ReasonRange, ReasonOrderBy, ReasonGroupBy, ReasonDistinct,
	ReasonFunction, ReasonEqualityWithoutIndex, ReasonInsertSelect, ReasonUnsupported, ReasonParseError}

// RefusalError is a statement pgveil will not run because it cannot be
// computed on ciphertext. It names the column and the operation, never a value.
type RefusalError struct {
	Table  string // "schema.table"
	Column string // column name ("" when the refusal is not about one column)
	Op     string // what was attempted: "LIKE", "ORDER BY", ...
	Hint   string // what is supported instead
	Reason string // metrics label: like, range, order_by, group_by, distinct, function, equality_without_index, insert_select, unsupported, parse_error

	// Code is the SQLSTATE; "" means 0A000.
	Code string
	// Message, when set, replaces the message built from Op, Table and
	// Column (it still starts with "pgveil: " and holds no value).
	Message string
}

func (e *RefusalError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	if e.Column == "" {
		return fmt.Sprintf("pgveil: %s is not supported on encrypted table %s", e.Op, e.Table)
	}
	return fmt.Sprintf("pgveil: %s is not supported on encrypted column %s.%s", e.Op, e.Table, e.Column)
}

// SQLState returns the SQLSTATE: 0A000 unless Code says otherwise.
func (e *RefusalError) SQLState() string {
	if e.Code != "" {
		return e.Code
	}
	return CodeFeatureNotSupported
}
