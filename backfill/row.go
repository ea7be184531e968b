package backfill

import (
	"bytes"
	"errors"

	"github.com/pgveil/pgveil/keyring"
)

// Keys is what the data commands need from a *keyring.Keyring.
type Keys interface {
	Seal(dst, plain []byte) ([]byte, error)
	Open(dst, token []byte) (plain []byte, keyIndex int, err error)
	BlindIndex(dst []byte, domain string, plain []byte) []byte
	KeyFingerprints() []string
	HashKeyFingerprint() string
}

var _ Keys = (*keyring.Keyring)(nil)

// class is what a stored value is.
type class uint8

const (
	classNull          class = iota // SQL NULL
	classToken                      // a token some configured key opens (keyIndex says which)
	classUndecryptable              // shaped like a token, no configured key opens it
	classPlain                      // not a token: plaintext not yet encrypted
)

// hashState is the state of a searchable column's blind index.
type hashState uint8

const (
	hashNone    hashState = iota // the column has no blind index
	hashOK                       // as the current hash key computes it (NULL for a NULL value)
	hashMissing                  // NULL while the value is not
	hashWrong                    // some other value
)

// failure says why a row could not be processed.
type failure uint8

const (
	failNone failure = iota
	failUndecryptable
	failTooLarge
	failInvalidInput
	failSeal
	// failDuplicate: writing the value (or its blind index) would violate a
	// unique index another row already satisfies with the same value: two
	// rows hold the same plaintext where it must be unique.
	failDuplicate
)

func (f failure) String() string {
	switch f {
	case failUndecryptable:
		return reasonUndecryptable
	case failTooLarge:
		return reasonTooLarge
	case failInvalidInput:
		return reasonInvalidInput
	case failSeal:
		return "encryption failed"
	case failDuplicate:
		return reasonDuplicate
	}
	return "none"
}

// Failure reasons as summaries and FailureError name them.
const (
	reasonUndecryptable = "undecryptable"
	reasonTooLarge      = "over max_size"
	reasonInvalidInput  = "invalid input"
	reasonDuplicate     = "duplicate"
)

// cell is one configured column of one row: what is stored and what the
// operation wants there instead.
type cell struct {
	class    class
	keyIndex int // classToken: 0 primary, i fallback i
	hash     hashState

	setValue bool
	value    []byte // new value when setValue (nil = NULL)
	setHash  bool
	newHash  []byte // new blind index when setHash (nil = NULL)
	fail     failure
}

// rowCodec evaluates cells for one operation with one keyring. It is not
// safe for concurrent use (it keeps scratch buffers); each worker has one.
type rowCodec struct {
	op       Op
	keys     Keys
	maxSize  int
	sanitize bool
	plain    []byte // scratch
	idx      []byte // scratch
}

// eval classifies value (nil = NULL) and its blind index stored (nil =
// NULL, ignored when domain is "") and decides what op writes. New values
// are appended to arena, which is returned; cell slices point into it, so
// the caller must not reuse arena until the cells are written.
func (rc *rowCodec) eval(c *cell, domain string, value, stored []byte, arena []byte) []byte {
	*c = cell{}
	searchable := domain != ""
	if rc.op == OpRehash && !searchable {
		return arena // nothing to do for a column without a blind index
	}
	var plain []byte
	switch {
	case value == nil:
		c.class = classNull
	case keyring.IsToken(value):
		p, ki, err := rc.keys.Open(rc.plain[:0], value)
		if err != nil {
			c.class = classUndecryptable
		} else {
			rc.plain = p
			plain = p
			c.class = classToken
			c.keyIndex = ki
		}
	default:
		c.class = classPlain
		plain = value
	}

	// The blind index as it should be for the stored plaintext.
	if searchable {
		switch {
		case c.class == classNull:
			if stored == nil {
				c.hash = hashOK
			} else {
				c.hash = hashWrong
			}
		case c.class == classUndecryptable:
			// Cannot be computed; count it under the value's own problem.
			c.hash = hashOK
		default:
			rc.idx = rc.keys.BlindIndex(rc.idx[:0], domain, plain)
			switch {
			case stored == nil:
				c.hash = hashMissing
			case bytes.Equal(stored, rc.idx):
				c.hash = hashOK
			default:
				c.hash = hashWrong
			}
		}
	}

	switch rc.op {
	case OpEncrypt:
		switch c.class {
		case classNull:
			if c.hash == hashWrong {
				c.setHash = true
			}
		case classUndecryptable:
			c.fail = failUndecryptable
		case classToken:
			if searchable && c.hash != hashOK {
				c.setHash = true
				arena, c.newHash = push(arena, rc.idx)
			}
		case classPlain:
			if err := keyring.CheckPlain(plain, rc.maxSize, rc.sanitize); err != nil {
				c.fail = plainFailure(err)
				return arena
			}
			var err error
			if arena, c.value, err = seal(rc.keys, arena, plain); err != nil {
				c.fail = failSeal
				return arena
			}
			c.setValue = true
			if searchable {
				c.setHash = true
				arena, c.newHash = push(arena, rc.idx)
			}
		}
	case OpReencrypt:
		switch c.class {
		case classUndecryptable:
			c.fail = failUndecryptable
		case classToken:
			if c.keyIndex != 0 {
				var err error
				if arena, c.value, err = seal(rc.keys, arena, plain); err != nil {
					c.fail = failSeal
					return arena
				}
				c.setValue = true
			}
		}
	case OpRehash:
		if !searchable {
			return arena
		}
		switch c.class {
		case classNull:
			if c.hash == hashWrong {
				c.setHash = true
			}
		case classUndecryptable:
			c.fail = failUndecryptable
		case classToken:
			if c.hash != hashOK {
				c.setHash = true
				arena, c.newHash = push(arena, rc.idx)
			}
		case classPlain:
			// Plaintext rows are looked up by their plaintext while the
			// index is empty (mode: migrating); only an index that is
			// there but stale is recomputed.
			if c.hash == hashWrong {
				c.setHash = true
				arena, c.newHash = push(arena, rc.idx)
			}
		}
	case OpDecrypt:
		switch c.class {
		case classUndecryptable:
			c.fail = failUndecryptable
		case classToken:
			c.setValue = true
			arena, c.value = push(arena, plain)
			if c.value == nil {
				c.value = []byte{} // the empty string, not NULL
			}
			if searchable {
				// Back to the state before the backfill: plaintext with an
				// empty blind index (what mode: migrating expects).
				c.setHash = true
			}
		}
	}
	return arena
}

// push appends b to arena and returns the grown arena and the appended
// part. Slices returned earlier stay valid: a reallocation leaves them in
// the old array, which nothing writes to any more.
func push(arena, b []byte) ([]byte, []byte) {
	start := len(arena)
	arena = append(arena, b...)
	return arena, arena[start:len(arena):len(arena)]
}

// seal appends the token of plain to arena.
func seal(k Keys, arena, plain []byte) ([]byte, []byte, error) {
	start := len(arena)
	out, err := k.Seal(arena, plain)
	if err != nil {
		return arena, nil, err
	}
	return out, out[start:len(out):len(out)], nil
}

func plainFailure(err error) failure {
	var se *keyring.SizeError
	if errors.As(err, &se) {
		return failTooLarge
	}
	return failInvalidInput
}
