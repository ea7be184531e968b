package keyring

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// SQLSTATE codes of the keyring's errors (SPEC §6).
const (
	CodeTooLarge      = "54000" // value over max_size (program_limit_exceeded)
	CodeInvalidInput  = "22021" // value refused by sanitize_input (character_not_in_repertoire)
	CodeUndecryptable = "XX001" // stored value no key can decrypt (data_corrupted)
)

// Sentinels wrapped by *DecryptError; compare with errors.Is.
var (
	// ErrNotToken: the value is not a Fernet token at all (for example
	// plaintext not yet backfilled).
	ErrNotToken = errors.New("pgveil: value is not a Fernet token")
	// ErrUndecryptable: the value is shaped like a token but no configured
	// key opens it.
	ErrUndecryptable = errors.New("pgveil: no configured key can decrypt the value")
)

// DecryptError is a stored value that could not be decrypted. It carries
// only keyless facts: the reason, how many keys were tried and their
// fingerprints, and optionally the column.
type DecryptError struct {
	Err          error    // ErrNotToken or ErrUndecryptable
	Column       string   // "schema.table.column" when known
	Keys         int      // keys tried
	Fingerprints []string // their fingerprints, primary first
}

func (e *DecryptError) Error() string {
	var b strings.Builder
	b.WriteString("pgveil: stored value")
	if e.Column != "" {
		b.WriteString(" in encrypted column ")
		b.WriteString(e.Column)
	}
	if errors.Is(e.Err, ErrNotToken) {
		b.WriteString(" is not a Fernet token")
		return b.String()
	}
	fmt.Fprintf(&b, " cannot be decrypted with any of the %d configured key(s)", e.Keys)
	if len(e.Fingerprints) > 0 {
		b.WriteString(" (fingerprints ")
		b.WriteString(strings.Join(e.Fingerprints, ", "))
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns ErrNotToken or ErrUndecryptable.
func (e *DecryptError) Unwrap() error { return e.Err }

// SQLState returns XX001.
func (e *DecryptError) SQLState() string { return CodeUndecryptable }

// Hint says how to fix it.
func (e *DecryptError) Hint() string {
	if errors.Is(e.Err, ErrNotToken) {
		return "run pgveil backfill to encrypt existing values, or use encryption.mode: migrating until it has finished"
	}
	return "add the key that encrypted it to keys.fallback_keys (ENCRYPTION_KEY_FALLBACK); pgveil verify lists such values"
}

// WithColumn returns a copy of e naming column.
func (e *DecryptError) WithColumn(column string) *DecryptError {
	c := *e
	c.Column = column
	return &c
}

// SizeError is a plaintext over encryption.max_size.
type SizeError struct {
	Column string // "schema.table.column" when known
	Size   int    // bytes of the value
	Max    int    // max_size
}

func (e *SizeError) Error() string {
	col := ""
	if e.Column != "" {
		col = " for encrypted column " + e.Column
	}
	return fmt.Sprintf("pgveil: value of %d bytes%s exceeds max_size of %d bytes", e.Size, col, e.Max)
}

// SQLState returns 54000.
func (e *SizeError) SQLState() string { return CodeTooLarge }

// Hint says how to fix it.
func (e *SizeError) Hint() string {
	return "store a smaller value, or raise encryption.max_size (ENCRYPTION_MAX_SIZE)"
}

// Reasons of an InvalidInputError.
const (
	ReasonInvalidUTF8 = "is not valid UTF-8"
	ReasonNULByte     = "contains a NUL byte"
)

// InvalidInputError is a plaintext refused by encryption.sanitize_input.
type InvalidInputError struct {
	Column string // "schema.table.column" when known
	Reason string // ReasonInvalidUTF8 or ReasonNULByte
}

func (e *InvalidInputError) Error() string {
	col := ""
	if e.Column != "" {
		col = " for encrypted column " + e.Column
	}
	return "pgveil: value" + col + " " + e.Reason
}

// SQLState returns 22021.
func (e *InvalidInputError) SQLState() string { return CodeInvalidInput }

// Hint says how to fix it.
func (e *InvalidInputError) Hint() string {
	return "send valid UTF-8 text without NUL bytes, or set encryption.sanitize_input: false (ENCRYPTION_SANITIZE_INPUT=false)"
}

// CheckPlain checks a plaintext before it is encrypted: longer than maxSize
// bytes (maxSize > 0) is a *SizeError; with sanitize, invalid UTF-8 or a NUL
// byte is an *InvalidInputError. It allocates only on failure.
func CheckPlain(plain []byte, maxSize int, sanitize bool) error {
	if maxSize > 0 && len(plain) > maxSize {
		return &SizeError{Size: len(plain), Max: maxSize}
	}
	if !sanitize {
		return nil
	}
	for i := 0; i < len(plain); {
		c := plain[i]
		if c == 0 {
			return &InvalidInputError{Reason: ReasonNULByte}
		}
		if c < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(plain[i:])
		if r == utf8.RuneError && n == 1 {
			return &InvalidInputError{Reason: ReasonInvalidUTF8}
		}
		i += n
	}
	return nil
}
