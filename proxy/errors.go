package proxy

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgveil/pgveil/rewrite"
)

// SQLSTATEs pgveil answers with itself (SPEC §6).
const (
	codeFeatureNotSupported = "0A000" // operation unsupported on an encrypted column
	codeProgramLimit        = "54000" // value over max_size, message over max_message_size
	codeUntranslatable      = "22021" // value refused by sanitize_input
	codeDataCorrupted       = "XX001" // stored value no key can decrypt (strict)
	codeCannotConnectNow    = "57P03" // maintenance mode, or draining at shutdown
	codeTooManyConnections  = "53300" // PostgreSQL: max_connections, CONNECTION LIMIT
	codeConnectionFailure   = "08006" // upstream unreachable
	codeProtocolViolation   = "08P01" // malformed protocol message
	codeInternal            = "XX000" // anything else
)

// sqlStater is implemented by every error pgveil raises on purpose
// (rewrite.RefusalError, keyring's value errors, MessageTooLargeError).
type sqlStater interface{ SQLState() string }

// hinter optionally adds a HINT with the fix.
type hinter interface{ Hint() string }

// pgError is an error pgveil raises itself with a fixed SQLSTATE.
type pgError struct {
	code, msg, hint string
}

func (e *pgError) Error() string    { return e.msg }
func (e *pgError) SQLState() string { return e.code }
func (e *pgError) Hint() string     { return e.hint }

// errorFields turns any error into the fields of an ErrorResponse: the code
// from SQLState() (else XX000), a message that always starts with "pgveil: "
// and never carries a value or key (errors are built from names and counts).
func errorFields(err error) (code, msg, hint string) {
	code = codeInternal
	var s sqlStater
	if errors.As(err, &s) {
		code = s.SQLState()
	}
	msg = err.Error()
	if !strings.HasPrefix(msg, "pgveil:") {
		msg = "pgveil: " + msg
	}
	var h hinter
	if errors.As(err, &h) {
		hint = h.Hint()
	} else if r, ok := refusalHint(err); ok {
		hint = r
	}
	return code, msg, hint
}

// errorResponse builds the one ErrorResponse pgveil sends for err.
func errorResponse(err error, fatal bool) *pgproto3.ErrorResponse {
	code, msg, hint := errorFields(err)
	sev := "ERROR"
	if fatal {
		sev = "FATAL"
	}
	return &pgproto3.ErrorResponse{Severity: sev, SeverityUnlocalized: sev, Code: code, Message: msg, Hint: hint}
}

// raiseSQL is a statement that makes PostgreSQL itself raise err. pgveil
// sends it in place of a statement it refuses, so the error takes the refused
// statement's place in the reply order, the rest of an extended batch is
// discarded up to Sync by the server, and a transaction block fails on the
// server exactly as the client sees it fail.
func raiseSQL(err error) string {
	code, msg, hint := errorFields(err)
	var b strings.Builder
	b.WriteString("DO $pgveil$BEGIN RAISE EXCEPTION USING ERRCODE = ")
	b.WriteString(quoteLiteral(code))
	b.WriteString(", MESSAGE = ")
	b.WriteString(quoteLiteral(msg))
	if hint != "" {
		b.WriteString(", HINT = ")
		b.WriteString(quoteLiteral(hint))
	}
	b.WriteString("; END$pgveil$")
	return b.String()
}

// quoteLiteral quotes s as a standard SQL string literal. Dollar signs are
// escaped away so the text cannot end the surrounding dollar quote.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, "$", "")
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func refusalHint(err error) (string, bool) {
	var r *rewrite.RefusalError
	if errors.As(err, &r) && r.Hint != "" {
		return r.Hint, true
	}
	return "", false
}
